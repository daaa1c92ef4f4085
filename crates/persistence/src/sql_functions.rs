//! SQL functions the queries call, known to both backends.

use diesel::expression::functions::declare_sql_function;
use diesel::sql_types::Text;

#[declare_sql_function]
extern "SQL" {
    /// `lower(text)`: what the unique index on users' emails is built on.
    fn lower(x: Text) -> Text;
}
