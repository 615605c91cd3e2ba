//! One `queries/<name>.sql` file: its header (`-- roles:`, `-- params:`), the static
//! read-only check, and its SQL split at the `{{param}}` tokens so that every token
//! becomes a bound parameter and never text.
//!
//! The check is a guard against mistakes, not a sandbox: query files are written by
//! whoever deploys livebase. The database's read-only transaction (see
//! `store::read_only`) is what makes a write impossible at run time.

use crate::store::{Dialect, Sql};

use crate::schema::value::SqlValue;

/// Words that only a statement that writes, changes the schema or the session uses
/// (`INTO` covers `INSERT INTO`, `REPLACE INTO` and PostgreSQL's `SELECT … INTO`).
const REFUSED_WORDS: [&str; 33] = [
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "UPSERT",
    "INTO",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "RENAME",
    "PRAGMA",
    "ATTACH",
    "DETACH",
    "COPY",
    "GRANT",
    "REVOKE",
    "VACUUM",
    "REINDEX",
    "ANALYZE",
    "CALL",
    "EXECUTE",
    "DO",
    "LOCK",
    "SET",
    "RESET",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "NOTIFY",
    "LISTEN",
];

/// Header keys a query file may declare.
const KEYS: [&str; 3] = ["roles", "params", "description"];

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Param(String),
}

/// A validated query. Its text is the whole file (comments included, so the lines the
/// database reports are the file's lines), cut at a trailing `;`.
#[derive(Debug, Clone)]
pub struct QueryFile {
    pub name: String,
    /// The roles that may run it (besides Admin and the master token).
    pub roles: Vec<String>,
    /// Declared parameters, in declaration order.
    pub params: Vec<String>,
    pieces: Vec<Piece>,
    /// Line of the first SQL line, for errors the database gives no position for.
    pub sql_line: usize,
}

/// `file:line: message`, as the start refuses a query file.
fn at(file: &str, line: usize, message: impl std::fmt::Display) -> String {
    format!("{file}:{line}: {message}")
}

fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A query's name: the file name without `.sql`.
pub fn is_query_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

struct Token {
    name: String,
    start: usize,
    end: usize,
    line: usize,
}

/// The text with everything that is not SQL code (comments, quoted strings and
/// identifiers, tokens) blanked to spaces, newlines kept; and the tokens.
struct Scan {
    code: Vec<u8>,
    tokens: Vec<Token>,
}

fn line_of(text: &[u8], at: usize) -> usize {
    1 + text[..at].iter().filter(|b| **b == b'\n').count()
}

fn scan(file: &str, text: &str) -> Result<Scan, String> {
    let b = text.as_bytes();
    let mut code = b.to_vec();
    let mut tokens = Vec::new();
    let blank = |code: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut code[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"--") {
            let end = rest
                .iter()
                .position(|c| *c == b'\n')
                .map_or(b.len(), |n| i + n);
            blank(&mut code, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            // PostgreSQL nests block comments; SQLite does not, but a nested one there
            // is a syntax error the database reports anyway.
            let (mut depth, mut j) = (1, i + 2);
            while depth > 0 {
                if j + 1 >= b.len() {
                    return Err(at(file, line_of(b, i), "a /* comment is never closed"));
                }
                if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                } else if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut code, i, j);
            i = j;
        } else if matches!(b[i], b'\'' | b'"' | b'`') {
            let quote = b[i];
            let mut j = i + 1;
            let end = loop {
                match b.get(j) {
                    None => {
                        return Err(at(
                            file,
                            line_of(b, i),
                            format!("a {} quote is never closed", quote as char),
                        ));
                    }
                    Some(c) if *c == quote && b.get(j + 1) == Some(&quote) => j += 2,
                    Some(c) if *c == quote => break j + 1,
                    Some(_) => j += 1,
                }
            };
            refuse_token_inside(file, b, i, end)?;
            blank(&mut code, i, end);
            i = end;
        } else if b[i] == b'$' {
            if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                return Err(at(
                    file,
                    line_of(b, i),
                    "positional placeholders ($1) are not allowed: name the parameter, {{name}}",
                ));
            }
            // A dollar-quoted string, `$tag$ … $tag$` (PostgreSQL).
            let tag_len = b[i + 1..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                .unwrap_or(b.len() - i - 1);
            if b.get(i + 1 + tag_len) == Some(&b'$') {
                let tag = &b[i..i + tag_len + 2];
                let body = i + tag.len();
                let close = b[body..]
                    .windows(tag.len())
                    .position(|w| w == tag)
                    .ok_or_else(|| at(file, line_of(b, i), "a $$ quoted string is never closed"))?;
                let end = body + close + tag.len();
                refuse_token_inside(file, b, i, end)?;
                blank(&mut code, i, end);
                i = end;
            } else {
                i += 1;
            }
        } else if b[i] == b'?' {
            return Err(at(
                file,
                line_of(b, i),
                "`?` placeholders are not allowed: name the parameter, {{name}}",
            ));
        } else if rest.starts_with(b"{{") {
            let line = line_of(b, i);
            let close = rest
                .windows(2)
                .position(|w| w == b"}}")
                .filter(|n| !rest[..*n].contains(&b'\n'))
                .ok_or_else(|| at(file, line, "a {{ token is not closed by }} on its line"))?;
            let name = text[i + 2..i + close].trim();
            if !is_param_name(name) {
                return Err(at(
                    file,
                    line,
                    format!(
                        "`{{{{{name}}}}}` is not a parameter token: {{{{name}}}}, name of letters, digits and _"
                    ),
                ));
            }
            let end = i + close + 2;
            tokens.push(Token {
                name: name.to_string(),
                start: i,
                end,
                line,
            });
            blank(&mut code, i, end);
            i = end;
        } else {
            i += 1;
        }
    }
    Ok(Scan { code, tokens })
}

fn refuse_token_inside(file: &str, b: &[u8], from: usize, to: usize) -> Result<(), String> {
    if let Some(n) = b[from..to].windows(2).position(|w| w == b"{{") {
        return Err(at(
            file,
            line_of(b, from + n),
            "a {{token}} inside quotes would not be a parameter: put it outside them (e.g. '%' || {{q}} || '%')",
        ));
    }
    Ok(())
}

struct Header {
    roles: Option<(usize, Vec<String>)>,
    params: Option<(usize, Vec<String>)>,
}

/// The leading `-- key: value` lines (other leading comments are free text).
fn header(file: &str, text: &str) -> Result<Header, String> {
    let mut head = Header {
        roles: None,
        params: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let Some(comment) = trimmed.strip_prefix("--") else {
            break;
        };
        let Some((key, value)) = comment.split_once(':') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphabetic()) {
            continue;
        }
        if !KEYS.contains(&key) {
            return Err(at(
                file,
                line_no,
                format!("unknown header `{key}` (known: {})", KEYS.join(", ")),
            ));
        }
        if seen.iter().any(|k| k == key) {
            return Err(at(file, line_no, format!("`{key}` is declared twice")));
        }
        seen.push(key.to_string());
        let list: Vec<String> = value
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        match key {
            "roles" => head.roles = Some((line_no, list)),
            "params" => head.params = Some((line_no, list)),
            _ => {}
        }
    }
    Ok(head)
}

/// Parses and checks `text` of `file` (named in errors); `known_roles` from the schema.
pub fn parse(
    file: &str,
    name: &str,
    text: &str,
    known_roles: &[String],
) -> Result<QueryFile, String> {
    let head = header(file, text)?;
    let Some((roles_line, roles)) = head.roles else {
        return Err(at(
            file,
            1,
            "no `-- roles:` line: say who may run it, e.g. `-- roles: Admin, User`",
        ));
    };
    if roles.is_empty() {
        return Err(at(file, roles_line, "`-- roles:` names no role"));
    }
    for role in &roles {
        if !known_roles.contains(role) {
            return Err(at(
                file,
                roles_line,
                format!("unknown role `{role}` (known: {})", known_roles.join(", ")),
            ));
        }
    }
    let (params_line, params) = head.params.unwrap_or((1, Vec::new()));
    for (i, p) in params.iter().enumerate() {
        if !is_param_name(p) {
            return Err(at(
                file,
                params_line,
                format!("`{p}` is not a parameter name (letters, digits and _)"),
            ));
        }
        if params[..i].contains(p) {
            return Err(at(file, params_line, format!("`{p}` is declared twice")));
        }
    }

    let scan = scan(file, text)?;
    let code = String::from_utf8_lossy(&scan.code).into_owned();
    let words = words(&code);
    let Some((first, sql_line)) = words.first().cloned() else {
        return Err(at(file, 1, "the file holds no SQL"));
    };
    if !["SELECT", "WITH", "VALUES"].contains(&first.as_str()) {
        return Err(at(
            file,
            sql_line,
            format!("a query is one read-only SELECT (or WITH … SELECT), not `{first}`"),
        ));
    }
    if let Some((word, line)) = words
        .iter()
        .find(|(w, _)| REFUSED_WORDS.contains(&w.as_str()))
    {
        return Err(at(
            file,
            *line,
            format!("`{word}` is not allowed: a query only reads"),
        ));
    }
    let mut end = text.len();
    if let Some(semi) = code.find(';') {
        if !code[semi + 1..].trim().is_empty() {
            return Err(at(
                file,
                line_of(text.as_bytes(), semi),
                "more than one statement: a query is a single statement",
            ));
        }
        end = semi;
    }
    for token in &scan.tokens {
        if !params.contains(&token.name) {
            return Err(at(
                file,
                token.line,
                format!(
                    "`{{{{{}}}}}` is not declared in `-- params:` (declared: {})",
                    token.name,
                    none_if_empty(&params)
                ),
            ));
        }
    }
    for p in &params {
        if !scan.tokens.iter().any(|t| &t.name == p) {
            return Err(at(
                file,
                params_line,
                format!("parameter `{p}` is declared but its {{{{{p}}}}} is never used"),
            ));
        }
    }
    let mut pieces = Vec::new();
    let mut from = 0;
    for token in &scan.tokens {
        pieces.push(Piece::Text(text[from..token.start].to_string()));
        pieces.push(Piece::Param(token.name.clone()));
        from = token.end;
    }
    pieces.push(Piece::Text(text[from..end].to_string()));
    Ok(QueryFile {
        name: name.to_string(),
        roles,
        params,
        pieces,
        sql_line,
    })
}

fn none_if_empty(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The upper-cased words of `code` with their lines.
fn words(code: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut word = String::new();
    let mut prev_dot = false;
    for c in code.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        // `t.update` is a column, not a statement; a word starting with a digit is a number.
        if !word.is_empty() && !prev_dot && !word.starts_with(|c: char| c.is_ascii_digit()) {
            out.push((word.to_ascii_uppercase(), line));
        }
        prev_dot = c == '.';
        word.clear();
        if c == '\n' {
            line += 1;
        }
    }
    out
}

impl QueryFile {
    /// The statement with each token bound to its value (a missing one as NULL).
    pub fn bound(&self, dialect: Dialect, value: impl Fn(&str) -> SqlValue) -> Sql {
        let mut sql = Sql::new(dialect);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => sql.push(text),
                Piece::Param(name) => sql.bind(value(name)),
            };
        }
        sql
    }

    /// The text with every token as NULL, to compile it at start.
    pub fn probe(&self, dialect: Dialect) -> String {
        self.bound(dialect, |_| SqlValue::Null).text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Vec<String> {
        ["Admin", "User", "ReadOnly", "Public"]
            .map(String::from)
            .to_vec()
    }

    fn check(text: &str) -> Result<QueryFile, String> {
        parse("queries/q.sql", "q", text, &roles())
    }

    #[test]
    fn tokens_become_placeholders_in_each_dialect() {
        let q = check(
            "-- roles: User\n-- params: role, min\nSELECT email FROM users\nWHERE role = {{role}} AND n > {{ min }} OR role = {{role}};\n-- end\n",
        )
        .unwrap();
        assert_eq!(q.params, ["role", "min"]);
        assert_eq!(q.sql_line, 3);
        let sql = q.bound(Dialect::Postgres, |n| SqlValue::Text(n.into()));
        assert!(
            sql.text.ends_with("role = $1 AND n > $2 OR role = $3"),
            "{}",
            sql.text
        );
        assert_eq!(sql.args.len(), 3);
        let sql = q.bound(Dialect::Sqlite, |_| SqlValue::Int(1));
        assert!(
            sql.text.ends_with("role = ? AND n > ? OR role = ?"),
            "{}",
            sql.text
        );
        assert!(q.probe(Dialect::Sqlite).contains("role = NULL"));
    }

    #[test]
    fn each_rule_names_its_line() {
        let cases = [
            ("SELECT 1", 1, "no `-- roles:`"),
            ("-- roles:\nSELECT 1", 1, "names no role"),
            ("-- roles: Boss\nSELECT 1", 1, "unknown role `Boss`"),
            (
                "-- roles: User\n-- owner: me\nSELECT 1",
                2,
                "unknown header `owner`",
            ),
            (
                "-- roles: User\n-- roles: Admin\nSELECT 1",
                2,
                "declared twice",
            ),
            ("-- roles: User\n\nDELETE FROM users", 3, "not `DELETE`"),
            (
                "-- roles: User\nSELECT 1;\nSELECT 2",
                2,
                "more than one statement",
            ),
            (
                "-- roles: User\nWITH d AS (\n DELETE FROM users RETURNING *)\nSELECT * FROM d",
                3,
                "`DELETE` is not allowed",
            ),
            (
                "-- roles: User\nSELECT * INTO x\nFROM users",
                2,
                "`INTO` is not allowed",
            ),
            (
                "-- roles: User\nSELECT 1 WHERE a = {{who}}",
                2,
                "`{{who}}` is not declared",
            ),
            (
                "-- roles: User\n-- params: a, b\nSELECT {{a}}",
                2,
                "`b` is declared but",
            ),
            (
                "-- roles: User\n-- params: a\nSELECT '{{a}}'",
                3,
                "inside quotes",
            ),
            (
                "-- roles: User\n-- params: a\nSELECT $x$ {{a}} $x$",
                3,
                "inside quotes",
            ),
            (
                "-- roles: User\nSELECT * FROM t WHERE a = ?",
                2,
                "`?` placeholders",
            ),
            (
                "-- roles: User\nSELECT * FROM t WHERE a = $1",
                2,
                "positional",
            ),
            ("-- roles: User\nSELECT 'abc", 2, "never closed"),
            ("-- roles: User\nSELECT {{a b}}", 2, "not a parameter token"),
            (
                "-- roles: User\n-- params: 1a\nSELECT 1",
                2,
                "not a parameter name",
            ),
            ("-- roles: User\n-- just words\n", 1, "holds no SQL"),
            (
                "-- roles: User\nSELECT 1; PRAGMA x",
                2,
                "`PRAGMA` is not allowed",
            ),
        ];
        for (text, line, wanted) in cases {
            let error = check(text).expect_err(text);
            assert!(
                error.starts_with(&format!("queries/q.sql:{line}: ")) && error.contains(wanted),
                "{text:?}: {error}"
            );
        }
    }

    #[test]
    fn quoted_words_comments_and_columns_are_not_statements() {
        let q = check(
            "-- roles: User\n-- description: lists: all of them\n/* delete? no */ SELECT \"update\", 'drop; insert' AS t, x.delete, $$ ; $$ -- into\nFROM t;",
        )
        .unwrap();
        assert_eq!(q.sql_line, 3);
    }
}
