//! SQL the queries use beyond diesel's DSL, known to both backends.

use std::marker::PhantomData;

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::expression::functions::declare_sql_function;
use diesel::expression::is_aggregate;
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Bool, HasSqlType, Text};

#[declare_sql_function]
extern "SQL" {
    /// `lower(text)`: what the unique index on users' emails is built on.
    fn lower(x: Text) -> Text;

    /// PostgreSQL's transaction-scoped advisory lock. It returns `void`; declared `Bool` only
    /// to be a diesel expression, and only ever executed, never loaded. Unlike the same call
    /// as text, the statement is prepared once per connection.
    fn pg_advisory_xact_lock(key: BigInt) -> Bool;
}

/// A condition (or, with `Out`, any expression) written in SQL, fixed at compile time, around
/// one value bound (the same value) between each of its parts.
///
/// Unlike diesel's `sql()`, whose text may be anything and so keeps every statement that
/// contains it out of the prepared-statement cache (re-planned on every run on SQLite, an extra
/// round trip on PostgreSQL), this text comes from a finite set of constants: statements built
/// with it are prepared once per connection.
#[derive(Debug, Clone)]
pub(crate) struct FixedSql<ST, T, Out = Bool> {
    parts: &'static [&'static str],
    value: T,
    sql_type: PhantomData<(ST, Out)>,
}

impl<ST, T, Out> FixedSql<ST, T, Out> {
    /// `parts[0] value parts[1] value … parts[n]`.
    pub(crate) const fn new(parts: &'static [&'static str], value: T) -> Self {
        Self { parts, value, sql_type: PhantomData }
    }
}

impl FixedSql<Text, &'static str> {
    /// A condition with no value at all.
    pub(crate) const fn plain(sql: &'static [&'static str]) -> Self {
        Self::new(sql, "")
    }
}

impl<ST, T, Out: diesel::sql_types::SqlType + diesel::expression::TypedExpressionType> Expression
    for FixedSql<ST, T, Out>
{
    type SqlType = Out;
}

impl<ST, T, Out, DB> QueryFragment<DB> for FixedSql<ST, T, Out>
where
    DB: Backend + HasSqlType<ST>,
    T: ToSql<ST, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push_bind_param::<ST, T>(&self.value)?;
            }
            out.push_sql(part);
        }
        Ok(())
    }
}

impl<ST, T, Out> QueryId for FixedSql<ST, T, Out> {
    type QueryId = ();
    // The text is not known from the type alone: the cache keys such statements by their SQL.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<QS, ST, T, Out> SelectableExpression<QS> for FixedSql<ST, T, Out> where Self: Expression {}

impl<QS, ST, T, Out> AppearsOnTable<QS> for FixedSql<ST, T, Out> where Self: Expression {}

impl<ST, T, Out, GB> ValidGrouping<GB> for FixedSql<ST, T, Out> {
    type IsAggregate = is_aggregate::Never;
}

/// A condition written in SQL, fixed at compile time, with two values bound in turn between
/// its three parts: `parts[0] first parts[1] second parts[2]`. Prepared once per connection, as
/// [`FixedSql`] is.
#[derive(Debug, Clone)]
pub(crate) struct FixedPairSql<ST1, T1, ST2, T2> {
    parts: &'static [&'static str; 3],
    first: T1,
    second: T2,
    sql_types: PhantomData<(ST1, ST2)>,
}

impl<ST1, T1, ST2, T2> FixedPairSql<ST1, T1, ST2, T2> {
    /// `parts[0] first parts[1] second parts[2]`.
    pub(crate) const fn new(parts: &'static [&'static str; 3], first: T1, second: T2) -> Self {
        Self { parts, first, second, sql_types: PhantomData }
    }
}

impl<ST1, T1, ST2, T2> Expression for FixedPairSql<ST1, T1, ST2, T2> {
    type SqlType = Bool;
}

impl<ST1, T1, ST2, T2, DB> QueryFragment<DB> for FixedPairSql<ST1, T1, ST2, T2>
where
    DB: Backend + HasSqlType<ST1> + HasSqlType<ST2>,
    T1: ToSql<ST1, DB>,
    T2: ToSql<ST2, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(self.parts[0]);
        out.push_bind_param::<ST1, T1>(&self.first)?;
        out.push_sql(self.parts[1]);
        out.push_bind_param::<ST2, T2>(&self.second)?;
        out.push_sql(self.parts[2]);
        Ok(())
    }
}

impl<ST1, T1, ST2, T2> QueryId for FixedPairSql<ST1, T1, ST2, T2> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<QS, ST1, T1, ST2, T2> SelectableExpression<QS> for FixedPairSql<ST1, T1, ST2, T2> {}

impl<QS, ST1, T1, ST2, T2> AppearsOnTable<QS> for FixedPairSql<ST1, T1, ST2, T2> {}

impl<ST1, T1, ST2, T2, GB> ValidGrouping<GB> for FixedPairSql<ST1, T1, ST2, T2> {
    type IsAggregate = is_aggregate::Never;
}

/// `<fixed SQL> = ANY(ARRAY(<select>))`, PostgreSQL only, for a boxed select of the
/// multi-backend connection (the row filters of a list, built at run time). PostgreSQL runs the
/// select once, first, and looks the column up by the few values it returned; `IN (<select>)`
/// would be planned as a semi-join sized by guesses (a `LIMIT` given as a parameter is guessed
/// at a tenth of the table), and cost more to plan.
#[derive(Debug, Clone)]
pub(crate) struct AnyOfSelect<Q> {
    column: &'static str,
    select: Q,
}

impl<Q> AnyOfSelect<Q> {
    /// `column = ANY(ARRAY(select))`.
    pub(crate) const fn new(column: &'static str, select: Q) -> Self {
        Self { column, select }
    }
}

impl<Q> Expression for AnyOfSelect<Q> {
    type SqlType = Bool;
}

impl<Q, DB> QueryFragment<DB> for AnyOfSelect<Q>
where
    DB: Backend,
    Q: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(self.column);
        out.push_sql(" = ANY(ARRAY(");
        self.select.walk_ast(out.reborrow())?;
        out.push_sql("))");
        Ok(())
    }
}

impl<Q> QueryId for AnyOfSelect<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<QS, Q> SelectableExpression<QS> for AnyOfSelect<Q> {}

impl<QS, Q> AppearsOnTable<QS> for AnyOfSelect<Q> {}

impl<Q, GB> ValidGrouping<GB> for AnyOfSelect<Q> {
    type IsAggregate = is_aggregate::Never;
}
