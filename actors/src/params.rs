//! Bounds on call parameters, checked before anything reaches a database.
//!
//! Parameters come from application code, and through it often from its users. A value the
//! drivers would mangle is refused with a `Usage` error that says which parameter and why:
//! an integer above `i64::MAX` would otherwise bind as a float and silently lose digits, and a
//! deeply nested array or object would recurse through every encoder (PostgreSQL itself
//! refuses jsonb nested deeper than its stack allows, after warden has spent the work).

use serde_json::Value;

/// The deepest nesting of arrays and objects a parameter may have; what serde_json allows
/// when it parses text.
pub const MAX_DEPTH: usize = 128;

/// The most bytes of parameter text (strings, numbers, keys) one statement may carry. A single
/// string of some megabytes (a document, a blob in base64) is fine; a statement that would
/// hold the I/O thread encoding hundreds of megabytes is not.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// Checks positional `Sql` parameters (`$1` is index 0).
pub(crate) fn check_sql(params: &[Value]) -> Result<(), String> {
    check(
        params
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("${}", i + 1), v)),
    )
}

/// Checks named `Cypher` parameters.
pub(crate) fn check_cypher(params: &serde_json::Map<String, Value>) -> Result<(), String> {
    check(params.iter().map(|(k, v)| (format!("${k}"), v)))
}

fn check<'a>(params: impl Iterator<Item = (String, &'a Value)>) -> Result<(), String> {
    let mut bytes = 0usize;
    for (name, value) in params {
        walk(value, &name, &mut bytes)?;
    }
    Ok(())
}

/// Walks a value without recursion (so that a value nested far too deep cannot overflow this
/// thread's stack while being checked), counting its size and looking for unbindable integers.
fn walk(value: &Value, name: &str, bytes: &mut usize) -> Result<(), String> {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((value, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(format!(
                "parameter {name} is nested deeper than {MAX_DEPTH} levels"
            ));
        }
        match value {
            Value::Null | Value::Bool(_) => *bytes += 1,
            Value::Number(n) => {
                if n.as_i64().is_none() && n.as_u64().is_some() {
                    return Err(format!(
                        "parameter {name} is the integer {n}, above the largest 64-bit integer \
                         ({}); pass it as a string and cast it in the statement (`::numeric`)",
                        i64::MAX
                    ));
                }
                *bytes += 8;
            }
            Value::String(s) => *bytes += s.len(),
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => {
                for (key, v) in map {
                    *bytes += key.len();
                    stack.push((v, depth + 1));
                }
            }
        }
        if *bytes > MAX_BYTES {
            return Err(format!(
                "the parameters are larger than {} MiB (at {name})",
                MAX_BYTES / (1024 * 1024)
            ));
        }
    }
    Ok(())
}

/// Drops a value without recursion. serde_json drops nested arrays and objects recursively,
/// and a value nested some thousands deep would overflow the stack of the thread that drops it
/// (an I/O thread, whose overflow aborts the whole process); a refused value is taken apart
/// here instead.
pub(crate) fn dismantle(value: Value) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 1..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn ordinary_values_pass() {
        let params = [
            json!(1),
            json!(-5),
            json!(1.5),
            json!("x"),
            json!({"a": [1, 2]}),
        ];
        assert_eq!(check_sql(&params), Ok(()));
        assert_eq!(check_sql(&[json!(i64::MAX), json!(i64::MIN)]), Ok(()));
        assert_eq!(check_sql(&[nested(MAX_DEPTH)]), Ok(()));
        assert_eq!(check_sql(&[json!("x".repeat(10 << 20))]), Ok(()));
    }

    #[test]
    fn integers_above_i64_are_refused_by_name() {
        let err = check_sql(&[json!(1), json!(u64::MAX)]).unwrap_err();
        assert!(
            err.contains("$2") && err.contains("18446744073709551615"),
            "{err}"
        );
        let mut map = serde_json::Map::new();
        map.insert("big".into(), json!([i64::MAX as u64 + 1]));
        assert!(check_cypher(&map).unwrap_err().contains("$big"));
    }

    #[test]
    fn deep_and_huge_values_are_refused() {
        let deep = nested(100_000);
        let err = check_sql(std::slice::from_ref(&deep)).unwrap_err();
        assert!(err.contains("deeper than 128"), "{err}");
        // Taken apart without recursion: a plain drop of this would overflow the stack.
        dismantle(deep);
        let big = vec![json!("x".repeat(40 << 20)), json!("y".repeat(40 << 20))];
        assert!(check_sql(&big).unwrap_err().contains("larger than 64 MiB"));
    }
}
