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

/// SQL text fixed at compile time and named by a type of its own: `parts[0] value parts[1]
/// value … parts[n]`, around one value bound (the same value) between each of its parts.
///
/// Naming the text by a type gives every statement made of such pieces, and of diesel's DSL, a
/// static query id: diesel's prepared-statement cache then finds the statement by its type,
/// where a statement with any piece known only at run time has its whole SQL text written
/// again on every run to be looked up by it. Declared with [`sql_text!`].
pub(crate) trait SqlText: 'static {
    /// The text, cut where the value is bound.
    const PARTS: &'static [&'static str];
}

/// Declares unit types that are [`SqlText`]s: `sql_text! { Name = ["a = ", ""]; ... }`.
macro_rules! sql_text {
    ($($(#[$doc:meta])* $vis:vis $name:ident = [$($part:expr),+ $(,)?];)+) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;

        impl $crate::sql_functions::SqlText for $name {
            const PARTS: &'static [&'static str] = &[$($part),+];
        }
    )+};
}
pub(crate) use sql_text;

/// A condition (or, with `Out`, any expression) written in SQL, the [`SqlText`] `P`, around
/// one value bound (the same value) between each of its parts.
///
/// Unlike diesel's `sql()`, whose text may be anything and so keeps every statement that
/// contains it out of the prepared-statement cache (re-planned on every run on SQLite, an extra
/// round trip on PostgreSQL), statements built with it are prepared once per connection, and
/// found again by their type alone.
#[derive(Debug, Clone)]
pub(crate) struct FixedSql<P, ST, T, Out = Bool> {
    value: T,
    sql: PhantomData<(P, ST, Out)>,
}

impl<P, ST, T, Out> FixedSql<P, ST, T, Out> {
    /// `P`'s text with `value` bound between its parts.
    pub(crate) const fn new(value: T) -> Self {
        Self { value, sql: PhantomData }
    }
}

impl<P> FixedSql<P, Text, &'static str> {
    /// A condition with no value at all.
    pub(crate) const fn plain() -> Self {
        Self::new("")
    }
}

impl<P, ST, T, Out: diesel::sql_types::SqlType + diesel::expression::TypedExpressionType> Expression
    for FixedSql<P, ST, T, Out>
{
    type SqlType = Out;
}

impl<P, ST, T, Out, DB> QueryFragment<DB> for FixedSql<P, ST, T, Out>
where
    P: SqlText,
    DB: Backend + HasSqlType<ST>,
    T: ToSql<ST, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        for (i, part) in P::PARTS.iter().enumerate() {
            if i > 0 {
                out.push_bind_param::<ST, T>(&self.value)?;
            }
            out.push_sql(part);
        }
        Ok(())
    }
}

// The text and the bound value's SQL type are the whole of the SQL and of its bind types: the
// Rust type of the value plays no part.
impl<P: SqlText, ST: 'static, T, Out: 'static> QueryId for FixedSql<P, ST, T, Out> {
    type QueryId = (P, ST, Out);
    const HAS_STATIC_QUERY_ID: bool = true;
}

/// `query`, which must have a static query id: the statements every request runs are found
/// in the prepared-statement cache by their type, and the build fails where one is not.
pub(crate) fn cached_by_type<Q: QueryId>(query: Q) -> Q {
    const {
        assert!(Q::HAS_STATIC_QUERY_ID, "this statement's SQL would be written on every run");
    }
    query
}

impl<QS, P, ST, T, Out> SelectableExpression<QS> for FixedSql<P, ST, T, Out> where Self: Expression {}

impl<QS, P, ST, T, Out> AppearsOnTable<QS> for FixedSql<P, ST, T, Out> where Self: Expression {}

impl<P, ST, T, Out, GB> ValidGrouping<GB> for FixedSql<P, ST, T, Out> {
    type IsAggregate = is_aggregate::Never;
}

/// A condition written in SQL, fixed at compile time, with two values bound in turn between
/// its three parts: `parts[0] first parts[1] second parts[2]`. Prepared once per connection, as
/// [`FixedSql`] is; its parts are a value, not a type, since it serves only the keyset pages'
/// boxed statements, whose SQL is looked up by its text anyway.
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

#[cfg(test)]
mod tests {
    use std::any::TypeId;

    use diesel::sqlite::Sqlite;

    use super::*;

    sql_text! {
        /// A condition on `a`.
        OnA = ["a = ", ""];
        /// The same condition twice, on `b`.
        OnB = ["(b = ", " OR b < ", ")"];
    }

    fn id_of<Q: QueryId>(_: &Q) -> Option<TypeId> {
        Q::query_id()
    }

    #[test]
    fn a_fixed_text_is_known_by_its_type_and_its_bound_type_alone() {
        let on_a = id_of(&FixedSql::<OnA, Text, _>::new("x"));
        assert!(on_a.is_some(), "a static query id");
        assert_eq!(on_a, id_of(&FixedSql::<OnA, Text, _>::new(String::from("another"))));
        assert_ne!(on_a, id_of(&FixedSql::<OnB, Text, _>::new("x")));
        assert_ne!(on_a, id_of(&FixedSql::<OnA, BigInt, _>::new(1_i64)));
        assert_ne!(on_a, id_of(&FixedSql::<OnA, Text, _, Text>::new("x")));
    }

    #[test]
    fn a_fixed_text_binds_its_value_between_each_of_its_parts() {
        let condition = FixedSql::<OnB, BigInt, _>::new(7_i64);
        let sql = diesel::debug_query::<Sqlite, _>(&condition).to_string();
        assert_eq!(sql, "(b = ? OR b < ?) -- binds: [7, 7]");
    }
}
