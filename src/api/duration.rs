//! Go-style durations (`90s`, `1m`, `1h30m`, `250ms`) as Kubernetes specs write them.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What [`GoDuration::parse`] accepts, as an ECMA-262 pattern for the CRD schema, so the API
/// server rejects `5d` at `kubectl apply` instead of the enforcer failing later.
pub const DURATION_PATTERN: &str = r"^\s*(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+)\s*$";

/// A duration written the Go way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

/// Why a duration string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {reason} (write it like 30s, 1m, 1h30m or 250ms)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl GoDuration {
    /// One minute (a GitSource's default interval).
    pub fn one_minute() -> Self {
        GoDuration(Duration::from_secs(60))
    }

    /// Five minutes (a Guard's default interval).
    pub fn five_minutes() -> Self {
        GoDuration(Duration::from_secs(300))
    }

    /// Parse `1h30m`, `45s`, `250ms`, `1.5h`, `0`.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let err = |reason| DurationError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        let mut total = 0f64;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| err("missing unit"))?;
            if num_len == 0 {
                return Err(err("expected a number"));
            }
            let value: f64 = rest[..num_len].parse().map_err(|_| err("bad number"))?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let seconds = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(err("unknown unit (use ns, us, ms, s, m or h)")),
            };
            total += value * seconds;
            rest = &rest[unit_len..];
        }
        Duration::try_from_secs_f64(total)
            .map(GoDuration)
            .map_err(|_| err("out of range"))
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let secs = d.as_secs();
        if d.subsec_nanos() != 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        if secs == 0 {
            return write!(f, "0s");
        }
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        GoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    // A plain string in the CRD: kube inlines every subschema anyway.
    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(GoDuration::parse("1m").unwrap().0, Duration::from_secs(60));
        assert_eq!(GoDuration::parse("1h30m").unwrap().0, Duration::from_secs(5400));
        assert_eq!(GoDuration::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(GoDuration::parse("1.5h").unwrap().0, Duration::from_secs(5400));
        assert_eq!(GoDuration::parse("0").unwrap().0, Duration::ZERO);
    }

    #[test]
    fn rejects_garbage_with_guidance() {
        for bad in ["", "5", "m", "5d", "1h-3m"] {
            let e = GoDuration::parse(bad).unwrap_err();
            assert!(e.to_string().contains("1h30m"), "{e}");
        }
    }

    /// The schema pattern and the parser agree, so the API server and the config loader accept
    /// the same durations.
    #[test]
    fn schema_pattern_accepts_what_the_parser_accepts() {
        let schema = schemars::SchemaGenerator::default().into_root_schema_for::<GoDuration>();
        assert_eq!(schema.get("type").and_then(|t| t.as_str()), Some("string"));
        let pattern = schema.get("pattern").and_then(|p| p.as_str()).unwrap();
        let pattern = regex::Regex::new(pattern).unwrap();
        let cases = [
            "0", "1m", "1h30m", "250ms", "1.5h", ".5s", "1.s", "10us", "3µs", "7ns", " 2h ", "", "5", "m", "5d",
            "1h-3m", "1.2.3s", "h1", "1 m", "0s", "00",
        ];
        for case in cases {
            assert_eq!(
                pattern.is_match(case),
                GoDuration::parse(case).is_ok(),
                "pattern and parser disagree on {case:?}"
            );
        }
    }

    #[test]
    fn displays_round_trip() {
        for s in ["1m", "1h30m", "45s", "250ms", "2h"] {
            assert_eq!(GoDuration::parse(s).unwrap().to_string(), s);
        }
    }
}
