//! The store URL (`[store] url`): which database, and how to show it without its password.

use crate::StoreError;
use std::path::PathBuf;

/// Where the store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite:///path/assist.db` (or `sqlite://relative/path.db`): a file, created if missing.
    Sqlite(PathBuf),
    /// `postgres://user:password@host:port/db` (or `postgresql://…`), as sqlx's PostgreSQL
    /// driver reads it (query parameters such as `sslmode` included).
    Postgres(String),
}

impl StoreUrl {
    /// Parses a store URL; an unknown scheme or an empty path is a clear error naming the URL
    /// (password redacted) and the forms accepted.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let forms = "use sqlite:///path/assist.db or postgres://user:password@host:port/db";
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(StoreError::InvalidUrl(format!(
                "store URL '{}' has no scheme: {forms}",
                redact_url(s)
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                // Any query string (sqlx's ?mode=…) is not ours to interpret: refuse it rather
                // than make a file named "assist.db?mode=ro".
                if rest.is_empty() || rest.contains('?') {
                    return Err(StoreError::InvalidUrl(format!(
                        "store URL '{s}' needs a file path and no options: sqlite:///path/assist.db"
                    )));
                }
                Ok(Self::Sqlite(PathBuf::from(rest)))
            }
            "postgres" | "postgresql" => Ok(Self::Postgres(s.to_owned())),
            other => Err(StoreError::InvalidUrl(format!(
                "store URL '{}' has the unknown scheme '{other}': {forms}",
                redact_url(s)
            ))),
        }
    }

    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite://{}", p.display()),
            Self::Postgres(s) => redact_url(s),
        }
    }
}

/// Never prints the password.
impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreUrl({})", self.redacted())
    }
}

/// Never prints the password.
impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `url` with the password of its `user:password@` part, and any `password=` query parameter,
/// replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            // The authority ends at the first '/', '?' or '#'; the userinfo at its last '@'.
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{tail}")
        }
        None => url.to_owned(),
    };
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes_and_refuses_others() {
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/assist/assist.db").unwrap(),
            StoreUrl::Sqlite("/var/lib/assist/assist.db".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite://data/a.db").unwrap(),
            StoreUrl::Sqlite("data/a.db".into())
        );
        assert!(matches!(
            StoreUrl::parse("postgres://u:p@db:5432/assist").unwrap(),
            StoreUrl::Postgres(_)
        ));
        assert!(matches!(
            StoreUrl::parse("PostgreSQL://u@db/assist").unwrap(),
            StoreUrl::Postgres(_)
        ));
        for bad in [
            "mysql://u:hunter2@db/assist",
            "assist.db",
            "sqlite://",
            "sqlite:///a.db?mode=ro",
        ] {
            let e = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("sqlite://"), "names the accepted forms: {e}");
        }
        let e = StoreUrl::parse("mysql://u:hunter2@db/assist")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown scheme 'mysql'") && e.contains("mysql://u:***@db/assist"),
            "{e}"
        );
    }

    #[test]
    fn redaction_hides_every_password() {
        let cases = [
            (
                "postgres://assist:s3cret@db:5432/assist",
                "postgres://assist:***@db:5432/assist",
            ),
            ("postgres://assist@db/assist", "postgres://assist@db/assist"),
            (
                "postgres://db/assist?password=s3cret&sslmode=disable",
                "postgres://db/assist?password=***&sslmode=disable",
            ),
            ("postgres://a:p@ss:w@rd@db/x", "postgres://a:***@db/x"),
            ("postgres://a:s3cret@db", "postgres://a:***@db"),
            ("sqlite:///x.db", "sqlite:///x.db"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want);
        }
        let u = StoreUrl::parse("postgres://assist:s3cret@db/assist").unwrap();
        assert!(!format!("{u} {u:?}").contains("s3cret"));
    }
}
