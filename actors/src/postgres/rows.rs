//! Parameters to PostgreSQL types, and rows to JSON.

use serde_json::{Map, Value};
use sqlx::{
    postgres::{PgArguments, PgRow, PgTypeInfo, PgValueRef},
    query::Query,
    Column, Postgres, Row, TypeInfo, ValueRef,
};

use crate::error::{Database, WardenError};

/// A NULL whose type the server infers: declared as `unknown` (OID 705), which PostgreSQL
/// resolves from context like an untyped literal. Only NULL can be sent this way, since a
/// value's bytes must match the type sqlx declares.
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(705))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

pub(super) fn bind<'q>(
    query: Query<'q, Postgres, PgArguments>,
    value: &Value,
) -> Query<'q, Postgres, PgArguments> {
    match value {
        Value::Null => query.bind(UntypedNull),
        Value::Bool(b) => query.bind(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => query.bind(i),
            None => query.bind(n.as_f64()),
        },
        Value::String(s) => query.bind(s.clone()),
        Value::Array(_) | Value::Object(_) => query.bind(sqlx::types::Json(value.clone())),
    }
}

/// Converts one row: common PostgreSQL types to their natural JSON, numeric as a string (JSON
/// numbers would lose its precision), timestamptz as RFC 3339 UTC.
pub(super) fn row_to_json(row: &PgRow) -> Result<Map<String, Value>, WardenError> {
    let mut out = Map::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = column_to_json(row, i).map_err(|e| WardenError::Conversion {
            database: Database::Postgres,
            message: format!(
                "column `{}` ({}): {e}",
                column.name(),
                column.type_info().name()
            ),
        })?;
        out.insert(column.name().to_owned(), value);
    }
    Ok(out)
}

/// Decodes without sqlx's type check (a clone of the column's type and a comparison per
/// value), from the one raw value fetched for the NULL check: the match on the column's type
/// name has already chosen the Rust type that decodes it, and this runs for every value of
/// every row.
fn column_to_json(row: &PgRow, i: usize) -> Result<Value, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    Ok(match row.columns()[i].type_info().name() {
        "BOOL" => Value::Bool(decode(raw, i)?),
        "INT2" => Value::from(decode::<i16>(raw, i)?),
        "INT4" => Value::from(decode::<i32>(raw, i)?),
        "INT8" => Value::from(decode::<i64>(raw, i)?),
        "OID" => Value::from(decode::<sqlx::postgres::types::Oid>(raw, i)?.0),
        "FLOAT4" => float(decode::<f32>(raw, i)?.into()),
        "FLOAT8" => float(decode::<f64>(raw, i)?),
        "NUMERIC" => Value::String(numeric_text(raw, i)?),
        "VOID" => Value::Null,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" => {
            Value::String(decode(raw, i)?)
        }
        "UUID" => Value::String(decode::<sqlx::types::Uuid>(raw, i)?.to_string()),
        "TIMESTAMPTZ" => Value::String(
            decode::<chrono::DateTime<chrono::Utc>>(raw, i)?
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
        "TIMESTAMP" => Value::String(decode::<chrono::NaiveDateTime>(raw, i)?.to_string()),
        "DATE" => Value::String(decode::<chrono::NaiveDate>(raw, i)?.to_string()),
        "TIME" => Value::String(decode::<chrono::NaiveTime>(raw, i)?.to_string()),
        "JSON" | "JSONB" => decode::<sqlx::types::Json<Value>>(raw, i)?.0,
        "TEXT[]" | "VARCHAR[]" => Value::from(decode::<Vec<String>>(raw, i)?),
        "INT4[]" => Value::from(decode::<Vec<i32>>(raw, i)?),
        "INT8[]" => Value::from(decode::<Vec<i64>>(raw, i)?),
        "BOOL[]" => Value::from(decode::<Vec<bool>>(raw, i)?),
        "FLOAT8[]" => Value::from(decode::<Vec<f64>>(raw, i)?),
        "UUID[]" => Value::from(
            decode::<Vec<sqlx::types::Uuid>>(raw, i)?
                .iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>(),
        ),
        other => {
            return Err(sqlx::Error::Decode(
                format!("no JSON mapping for type {other}; cast it in SQL (e.g. ::text)").into(),
            ))
        }
    })
}

/// One value decoded from its raw bytes, as `try_get_unchecked` would, without fetching the
/// raw value (and cloning its type) a second time.
fn decode<'r, T: sqlx::Decode<'r, Postgres>>(
    raw: PgValueRef<'r>,
    i: usize,
) -> Result<T, sqlx::Error> {
    T::decode(raw).map_err(|source| sqlx::Error::ColumnDecode {
        index: format!("{i:?}"),
        source,
    })
}

/// A numeric as PostgreSQL prints it, from the one raw value like every other column. The
/// decoded value loses the display scale (`10.50` would print as `10.5000`), so the scale is
/// read from the binary header (ndigits, weight, sign, dscale: four big-endian i16s) and
/// applied.
fn numeric_text(raw: PgValueRef<'_>, i: usize) -> Result<String, sqlx::Error> {
    let bytes = raw.as_bytes().map_err(sqlx::Error::Decode)?;
    // sign 0xC000 is NaN, which BigDecimal cannot hold.
    if bytes.len() >= 6 && bytes[4..6] == [0xC0, 0x00] {
        return Ok("NaN".into());
    }
    let dscale = bytes
        .get(6..8)
        .map(|b| i64::from(i16::from_be_bytes([b[0], b[1]])))
        .unwrap_or(0);
    let value = decode::<sqlx::types::BigDecimal>(raw, i)?;
    Ok(value.with_scale(dscale).to_string())
}

/// NaN and infinities have no JSON number; they become strings as PostgreSQL prints them.
fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(
        || {
            Value::String(
                if f.is_nan() {
                    "NaN"
                } else if f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }
                .into(),
            )
        },
        Value::Number,
    )
}
