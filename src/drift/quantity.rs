//! Kubernetes `resource.Quantity`: parsing, equality by value, and the canonical string the
//! API server stores (`k8s.io/apimachinery/pkg/api/resource`).
//!
//! Rules followed, as the API server's `ParseQuantity` applies them:
//! - grammar `[+-][digits][.digits][suffix]` with suffix one of the binary SI suffixes
//!   (`Ki`..`Ei`), the decimal SI suffixes (`n u m "" k M G T P E`) or a decimal exponent
//!   (`e3`, `E-2`, within ±(2^31-1)); no whitespace; a number without digits (`.`, `-`,
//!   `Ki`) is zero, as in Go;
//! - values are rounded *up* (away from zero) to nano precision and capped at `2^63-1`;
//! - the canonical form keeps the suffix family (binary, decimal SI, decimal exponent), uses
//!   the largest exponent that loses no precision and emits no fractional digits: `0.5` ->
//!   `500m`, `1.5Gi` -> `1536Mi`, `1000` -> `1k`, `129e6` stays `129e6`. Binary values below
//!   1024 or with a fraction are emitted as decimal SI (`0.5Ki` -> `512`).
//!
//! Arithmetic is exact on `u128`; inputs with more than 38 significant digits are rejected
//! rather than approximated (callers then compare them as plain strings).

use std::fmt;

use serde_json::Value;

/// Why a string is not a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string is empty.
    #[error("quantity is empty")]
    Empty,
    /// The suffix is none of the Kubernetes suffixes.
    #[error("quantity suffix is not one of Ki..Ei, n u m k M G T P E, or an exponent")]
    Suffix,
    /// More significant digits than can be represented exactly.
    #[error("quantity has too many significant digits")]
    TooPrecise,
}

/// The suffix family a quantity was written in; kept by the canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Powers of 1024: `Ki`, `Mi`, ... `Ei`.
    BinarySI,
    /// Powers of 1000: `n`, `u`, `m`, none, `k`, `M`, ... `E`.
    DecimalSI,
    /// `e<n>` / `E<n>`.
    DecimalExponent,
}

/// A parsed quantity. Equality compares values, not formats (`1Gi` == `1073741824`).
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    negative: bool,
    /// Magnitude in units of 10^-9, after rounding up and capping.
    nanos: u128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.negative == other.negative && self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

const NANOS_PER_UNIT: u128 = 1_000_000_000;
/// `2^63-1`, the largest quantity the API server represents, in nanos.
const CAP_NANOS: u128 = (i64::MAX as u128) * NANOS_PER_UNIT;
/// Decimal SI suffixes by power of ten; shared by parsing and formatting.
const DECIMAL_SUFFIXES: [(&str, i32); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];
/// Binary SI suffixes by power of 1024 (index = power).
const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
/// Significant digits that fit a `u128` exactly.
const MAX_DIGITS: usize = 38;

/// Parse a quantity string exactly as `resource.ParseQuantity` does.
pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, s.get(1..).unwrap_or("")),
        Some(b'+') => (false, s.get(1..).unwrap_or("")),
        _ => (false, s),
    };
    let int_len = digit_prefix_len(rest);
    // Digit prefixes end on an ASCII boundary, so the splits cannot fail.
    let (int, rest) = rest.split_at_checked(int_len).unwrap_or(("", rest));
    let (frac, suffix) = match rest.strip_prefix('.') {
        Some(after_dot) => after_dot
            .split_at_checked(digit_prefix_len(after_dot))
            .unwrap_or(("", after_dot)),
        None => ("", rest),
    };
    let (binary, exponent, format) = interpret_suffix(suffix)?;
    let nanos = magnitude_nanos(int, frac, binary, exponent)?;
    Ok(Quantity {
        negative: negative && nanos != 0,
        nanos,
        format,
    })
}

/// The canonical string the API server stores for `s`, or `None` when `s` is no quantity.
pub fn canonical(s: &str) -> Option<String> {
    parse(s).ok().map(|q| q.to_string())
}

/// A quantity from a JSON value: a string, or a number as YAML/JSON manifests often write
/// (`cpu: 0.5`), which the API server accepts for quantity fields. Like the API server's JSON
/// decoding, surrounding whitespace is ignored.
pub fn from_json(v: &Value) -> Option<Quantity> {
    match v {
        Value::String(s) => parse(s.trim()).ok(),
        Value::Number(n) => parse(&n.to_string()).ok(),
        _ => None,
    }
}

impl Quantity {
    /// The suffix family the quantity was written in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// True for a zero quantity.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
}

impl fmt::Display for Quantity {
    /// The canonical form (see the module documentation).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.negative { "-" } else { "" };
        if self.format == Format::BinarySI
            && self.nanos >= 1024 * NANOS_PER_UNIT
            && self.nanos.is_multiple_of(NANOS_PER_UNIT)
        {
            let mut units = self.nanos / NANOS_PER_UNIT;
            let mut power = 0usize;
            while power + 1 < BINARY_SUFFIXES.len() && units.is_multiple_of(1024) {
                units /= 1024;
                power += 1;
            }
            let suffix = BINARY_SUFFIXES.get(power).copied().unwrap_or("");
            return write!(f, "{sign}{units}{suffix}");
        }
        // Binary values that are small or fractional are shown as decimal SI so no precision
        // is lost, as the API server does.
        let mut mantissa = self.nanos;
        let mut exponent: i32 = -9;
        while mantissa.is_multiple_of(10) {
            mantissa /= 10;
            exponent += 1;
        }
        let aligned = exponent.div_euclid(3) * 3;
        for _ in aligned..exponent {
            mantissa *= 10;
        }
        match self.format {
            Format::DecimalExponent if aligned == 0 => write!(f, "{sign}{mantissa}"),
            Format::DecimalExponent => write!(f, "{sign}{mantissa}e{aligned}"),
            Format::DecimalSI | Format::BinarySI => match DECIMAL_SUFFIXES.iter().find(|(_, e)| *e == aligned) {
                Some((suffix, _)) => write!(f, "{sign}{mantissa}{suffix}"),
                None => write!(f, "{sign}{mantissa}e{aligned}"),
            },
        }
    }
}

fn digit_prefix_len(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// (is binary, exponent (of 2 when binary, else of 10), format) for a suffix.
fn interpret_suffix(suffix: &str) -> Result<(bool, i64, Format), QuantityError> {
    if let Some((_, e)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        return Ok((false, i64::from(*e), Format::DecimalSI));
    }
    if let Some(power) = BINARY_SUFFIXES.iter().skip(1).position(|s| *s == suffix) {
        let exponent = i64::try_from((power + 1) * 10).map_err(|_| QuantityError::Suffix)?;
        return Ok((true, exponent, Format::BinarySI));
    }
    match suffix.strip_prefix(['e', 'E']) {
        // The API server keeps the exponent in an int32 it later negates.
        Some(digits) if !digits.is_empty() => match digits.parse::<i32>() {
            Ok(e) if e != i32::MIN => Ok((false, i64::from(e), Format::DecimalExponent)),
            _ => Err(QuantityError::Suffix),
        },
        _ => Err(QuantityError::Suffix),
    }
}

fn pow10(n: u32) -> Option<u128> {
    10u128.checked_pow(n)
}

/// Magnitude of `int.frac × base^exponent` in nanos, rounded up and capped like the API server.
fn magnitude_nanos(int: &str, frac: &str, binary: bool, exponent: i64) -> Result<u128, QuantityError> {
    let all = || int.bytes().chain(frac.bytes());
    let total = int.len() + frac.len();
    let leading = all().take_while(|b| *b == b'0').count();
    if leading == total {
        return Ok(0);
    }
    let trailing = all().rev().take_while(|b| *b == b'0').count();
    let sig_len = total - leading - trailing;
    if sig_len > MAX_DIGITS {
        return Err(QuantityError::TooPrecise);
    }
    let significand = all()
        .skip(leading)
        .take(sig_len)
        .fold(0u128, |acc, b| acc * 10 + u128::from(b - b'0'));
    // value = significand × 10^scale (× 2^exponent when binary)
    let scale = to_i64(trailing) - to_i64(frac.len());
    let decimal_scale = if binary { scale } else { scale.saturating_add(exponent) };
    // Integer digits before any binary multiplier: ≥ 20 digits is past the cap already.
    if to_i64(sig_len).saturating_add(decimal_scale) > 19 {
        return Ok(CAP_NANOS);
    }
    let nanos = if binary {
        binary_nanos(significand, scale, exponent)?
    } else {
        decimal_nanos(significand, decimal_scale)
    };
    Ok(nanos.map_or(CAP_NANOS, |n| n.min(CAP_NANOS)))
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `significand × 10^scale` in nanos, rounded up; `None` on overflow (past the cap).
fn decimal_nanos(significand: u128, scale: i64) -> Option<u128> {
    let shift = scale.saturating_add(9);
    if shift >= 0 {
        let p = pow10(u32::try_from(shift).ok()?)?;
        return significand.checked_mul(p);
    }
    // Trailing zeros were stripped, so dropping digits always drops a non-zero one.
    let drop = u32::try_from(shift.unsigned_abs()).unwrap_or(u32::MAX);
    Some(match pow10(drop) {
        Some(p) => significand / p + 1,
        None => 1,
    })
}

/// `significand × 10^scale × 2^exponent` in nanos, rounded up; `Ok(None)` past the cap.
fn binary_nanos(significand: u128, scale: i64, exponent: i64) -> Result<Option<u128>, QuantityError> {
    let e = u32::try_from(exponent).map_err(|_| QuantityError::Suffix)?;
    let two_e = 1u128.checked_shl(e).ok_or(QuantityError::Suffix)?;
    let shift = scale.saturating_add(9);
    if shift >= 0 {
        let Some(p) = u32::try_from(shift).ok().and_then(pow10) else {
            return Ok(None);
        };
        return Ok(significand.checked_mul(p).and_then(|v| v.checked_mul(two_e)));
    }
    // nanos = ceil(significand × 2^e / 10^j)
    let j = u32::try_from(shift.unsigned_abs()).map_err(|_| QuantityError::TooPrecise)?;
    let m = pow10(j).ok_or(QuantityError::TooPrecise)?;
    let whole = (significand / m).checked_mul(two_e);
    let frac = ceil_mul_pow2_div(significand % m, e, m);
    Ok(whole.and_then(|w| w.checked_add(frac)))
}

/// `ceil(r × 2^e / m)` for `r < m <= 10^38`, by binary long division (no overflow: the running
/// remainder stays below `m`, so doubling it stays below `2 × 10^38 < u128::MAX`).
fn ceil_mul_pow2_div(r: u128, e: u32, m: u128) -> u128 {
    let mut quotient = 0u128;
    let mut rem = r;
    for _ in 0..e {
        rem <<= 1;
        quotient <<= 1;
        if rem >= m {
            rem -= m;
            quotient |= 1;
        }
    }
    quotient + u128::from(rem != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_match_the_api_server() {
        let cases = [
            ("100m", "100m"),
            ("0.1", "100m"),
            ("0.5", "500m"),
            (".5", "500m"),
            ("1.5", "1500m"),
            ("1000m", "1"),
            ("1", "1"),
            ("1000", "1k"),
            ("1k", "1k"),
            ("2000000", "2M"),
            ("1e3", "1e3"),
            ("1E3", "1e3"),
            ("1.5e3", "1500"),
            ("12e2", "1200"),
            ("129e6", "129e6"),
            ("129M", "129M"),
            ("1e-3", "1e-3"),
            ("1.5Gi", "1536Mi"),
            ("1536Mi", "1536Mi"),
            ("1024Mi", "1Gi"),
            ("500Mi", "500Mi"),
            ("0.5Gi", "512Mi"),
            ("1Ki", "1Ki"),
            ("1.5Ki", "1536"),
            ("0.5Ki", "512"),
            ("1.1Ki", "1126400m"),
            ("1.5m", "1500u"),
            ("0.0000000001", "1n"),
            ("0.0000000015", "2n"),
            ("1.0000000001Ki", "1024000000103n"),
            ("-1.5", "-1500m"),
            ("-1Ki", "-1Ki"),
            ("+2Gi", "2Gi"),
            ("0", "0"),
            ("0Gi", "0"),
            ("-0", "0"),
            ("000.000m", "0"),
            ("010", "10"),
            ("100.035k", "100035"),
            ("10.035M", "10035k"),
            ("1.3E+6", "1300e3"),
            ("0.5e-1", "50e-3"),
            ("3.001n", "4n"),
            ("1.1E-9", "2e-9"),
            ("0.00000012345", "124n"),
            ("9Ei", "9223372036854775807"),
            ("100.035Ki", "102435840m"),
            ("0.05Gi", "53687091200m"),
            (".001Ki", "1024m"),
            (".000000001Ki", "1024n"),
            (".000000000001Ki", "2n"),
            ("1.G", "1G"),
            ("1000M", "1G"),
            ("E2147483647", "0"),
            (".", "0"),
            ("-", "0"),
            ("m", "0"),
            ("Ki", "0"),
            ("1Ei", "1Ei"),
            ("8Ei", "9223372036854775807"),
            ("9223372036854775808", "9223372036854775807"),
            ("99999999999999999999999", "9223372036854775807"),
            ("5.", "5"),
        ];
        for (input, want) in cases {
            assert_eq!(canonical(input).as_deref(), Some(want), "canonical({input:?})");
        }
    }

    #[test]
    fn canonical_is_idempotent() {
        for input in ["0.5", "1.5Gi", "1e3", "129e6", "1.1Ki", "2000000", "-3.25m"] {
            let once = canonical(input).unwrap_or_default();
            assert_eq!(canonical(&once).as_deref(), Some(once.as_str()), "{input}");
        }
    }

    #[test]
    fn rejects_what_the_api_server_rejects() {
        let cases = [
            ("", QuantityError::Empty),
            ("1KiB", QuantityError::Suffix),
            ("1.1.M", QuantityError::Suffix),
            ("1+1.0M", QuantityError::Suffix),
            ("0.1mi", QuantityError::Suffix),
            ("0.1am", QuantityError::Suffix),
            (".5i", QuantityError::Suffix),
            ("-3.01e-", QuantityError::Suffix),
            ("1e4294967297", QuantityError::Suffix),
            ("1E-2147483648", QuantityError::Suffix),
            (" 1", QuantityError::Suffix),
            ("1 ", QuantityError::Suffix),
            ("1K", QuantityError::Suffix),
            ("1e", QuantityError::Suffix),
            ("1e3.5", QuantityError::Suffix),
            ("1..5", QuantityError::Suffix),
            ("aoeu", QuantityError::Suffix),
            ("1 Gi", QuantityError::Suffix),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Err(want), "parse({input:?})");
        }
        assert_eq!(
            parse("1.000000000000000000000000000000000000001"),
            Err(QuantityError::TooPrecise)
        );
    }

    #[test]
    fn equality_is_by_value() {
        let eq = |a: &str, b: &str| parse(a).ok() == parse(b).ok() && parse(a).is_ok();
        assert!(eq("0.5", "500m"));
        assert!(eq("1Gi", "1073741824"));
        assert!(eq("1Gi", "1024Mi"));
        assert!(eq("1k", "1e3"));
        assert!(eq("1", "1000m"));
        assert!(!eq("1", "1001m"));
        assert!(!eq("1Gi", "1G"));
        assert!(!eq("-1", "1"));
        assert_eq!(
            from_json(&serde_json::json!(0.5)),
            parse("500m").ok(),
            "numbers are quantities too"
        );
        assert_eq!(from_json(&serde_json::json!(2)), parse("2").ok());
        assert_eq!(from_json(&serde_json::json!(" 250m ")), parse("250m").ok());
        assert_eq!(from_json(&serde_json::json!(true)), None);
    }

    #[test]
    fn format_is_kept() {
        assert_eq!(parse("1Mi").map(|q| q.format()), Ok(Format::BinarySI));
        assert_eq!(parse("1M").map(|q| q.format()), Ok(Format::DecimalSI));
        assert_eq!(parse("1e6").map(|q| q.format()), Ok(Format::DecimalExponent));
        assert_eq!(parse("0").map(|q| q.is_zero()), Ok(true));
    }
}
