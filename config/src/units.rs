//! Human-friendly sizes (`512MiB`, `1GB`) and durations (`15s`, `1h30m`) as used in
//! Prometheus and Kubernetes configuration files.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A byte count written as an integer or with a unit: `B`, `KB`/`MB`/`GB`/`TB` (powers
/// of 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024 * 1024)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Why a size does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("invalid size {input:?}: expected a number such as 512MiB")]
    NoNumber { input: String },
    #[error("invalid size {input:?}: unknown unit {unit:?} (use B, KB, MB, GB, KiB, MiB, GiB)")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid size {input:?}: {number:?} is not a number")]
    NotANumber {
        input: String,
        number: String,
        #[source]
        source: std::num::ParseFloatError,
    },
    #[error("invalid size {input:?}: too large")]
    TooLarge { input: String },
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, SizeError> {
        let s = s.trim();
        let input = || s.to_owned();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return Err(SizeError::NoNumber { input: input() });
        }
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => {
                return Err(SizeError::UnknownUnit {
                    input: input(),
                    unit: other.to_owned(),
                })
            }
        };
        let value: f64 = num.parse().map_err(|source| SizeError::NotANumber {
            input: input(),
            number: num.to_owned(),
            source,
        })?;
        let bytes = value * mult as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(SizeError::TooLarge { input: input() });
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= m && b.is_multiple_of(m) {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

/// A duration in Prometheus notation: one or more `<number><unit>` with units `ms`, `s`,
/// `m`, `h`, `d`, `w` (e.g. `15s`, `1h30m`). A bare `0` is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(n: u64) -> Self {
        Dur(Duration::from_secs(n))
    }
    pub const fn millis(n: u64) -> Self {
        Dur(Duration::from_millis(n))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

/// A duration that does not parse (or overflows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected e.g. 500ms, 15s, 5m, 1h30m")]
pub struct DurationError {
    pub input: String,
}

impl FromStr for Dur {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, DurationError> {
        let s = s.trim();
        if s == "0" {
            return Ok(Dur(Duration::ZERO));
        }
        let bad = || DurationError {
            input: s.to_owned(),
        };
        if s.is_empty() {
            return Err(bad());
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let ms: u64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                _ => return Err(bad()),
            };
            let add = n.checked_mul(ms).ok_or_else(bad)?;
            total = total
                .checked_add(Duration::from_millis(add))
                .ok_or_else(bad)?;
        }
        Ok(Dur(total))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else if !ms.is_multiple_of(60_000) {
            write!(f, "{}s", ms / 1000)
        } else if !ms.is_multiple_of(3_600_000) {
            write!(f, "{}m", ms / 60_000)
        } else {
            write!(f, "{}h", ms / 3_600_000)
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("1GiB".parse::<ByteSize>().unwrap(), ByteSize(1 << 30));
        assert_eq!("512MiB".parse::<ByteSize>().unwrap(), ByteSize(512 << 20));
        assert_eq!("10MB".parse::<ByteSize>().unwrap(), ByteSize(10_000_000));
        assert_eq!("1.5KiB".parse::<ByteSize>().unwrap(), ByteSize(1536));
        assert_eq!("42".parse::<ByteSize>().unwrap(), ByteSize(42));
        assert!("12XB"
            .parse::<ByteSize>()
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!("MiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!("15s".parse::<Dur>().unwrap(), Dur::secs(15));
        assert_eq!("1h30m".parse::<Dur>().unwrap(), Dur::secs(5400));
        assert_eq!("250ms".parse::<Dur>().unwrap(), Dur::millis(250));
        assert_eq!("0".parse::<Dur>().unwrap(), Dur::secs(0));
        for bad in ["", "15", "s", "1x", "1.5s", "-1s"] {
            assert!(bad.parse::<Dur>().is_err(), "{bad} should not parse");
        }
        assert_eq!(Dur::secs(5400).to_string(), "90m");
    }
}
