//! Timestamps of a series: parsing, ordering, the regular step and the timestamps after the
//! end of a file.

use serde::{Deserialize, Serialize};

/// The text form of a time column, inferred from its first value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// An integer such as a year (`1700`) or a step number.
    Integer,
    /// `YYYY-MM`, one value per month.
    YearMonth,
    /// `YYYY-MM-DD`.
    Date,
    /// `YYYY-MM-DDTHH:MM:SS` or `YYYY-MM-DD HH:MM:SS`, without a time zone.
    DateTime,
}

impl TimeFormat {
    /// Infers the format of `text`, or returns `None` if it has none of the forms.
    pub fn infer(text: &str) -> Option<TimeFormat> {
        [
            TimeFormat::Integer,
            TimeFormat::YearMonth,
            TimeFormat::Date,
            TimeFormat::DateTime,
        ]
        .into_iter()
        .find(|format| format.parse(text).is_some())
    }

    /// The form, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            TimeFormat::Integer => "an integer such as 1700",
            TimeFormat::YearMonth => "YYYY-MM",
            TimeFormat::Date => "YYYY-MM-DD",
            TimeFormat::DateTime => "YYYY-MM-DDTHH:MM:SS",
        }
    }

    /// Parses `text` to an ordinal that increases with time: the integer itself, months
    /// since year 0, days since 1970-01-01, or seconds since 1970-01-01T00:00:00.
    pub fn parse(self, text: &str) -> Option<i64> {
        let text = text.trim();
        match self {
            TimeFormat::Integer => text.parse().ok(),
            TimeFormat::YearMonth => {
                let (year, month) = text.split_once('-')?;
                let (year, month) = (parse_digits(year, 4)?, parse_digits(month, 2)?);
                (1..=12).contains(&month).then_some(year * 12 + month - 1)
            }
            TimeFormat::Date => parse_date(text),
            TimeFormat::DateTime => {
                let (date, time) = text.split_once(['T', ' '])?;
                let days = parse_date(date)?;
                let mut parts = time.split(':');
                let hours = parse_digits(parts.next()?, 2)?;
                let minutes = parse_digits(parts.next()?, 2)?;
                let seconds = parse_digits(parts.next()?, 2)?;
                if parts.next().is_some() || hours > 23 || minutes > 59 || seconds > 60 {
                    return None;
                }
                Some(days * 86_400 + hours * 3600 + minutes * 60 + seconds)
            }
        }
    }

    /// Writes an ordinal from [`TimeFormat::parse`] back as text.
    pub fn format(self, ordinal: i64) -> String {
        match self {
            TimeFormat::Integer => ordinal.to_string(),
            TimeFormat::YearMonth => {
                format!(
                    "{:04}-{:02}",
                    ordinal.div_euclid(12),
                    ordinal.rem_euclid(12) + 1
                )
            }
            TimeFormat::Date => {
                let (y, m, d) = civil_from_days(ordinal);
                format!("{y:04}-{m:02}-{d:02}")
            }
            TimeFormat::DateTime => {
                let (y, m, d) = civil_from_days(ordinal.div_euclid(86_400));
                let seconds = ordinal.rem_euclid(86_400);
                format!(
                    "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
                    seconds / 3600,
                    seconds / 60 % 60,
                    seconds % 60
                )
            }
        }
    }
}

fn parse_digits(text: &str, len: usize) -> Option<i64> {
    (text.len() == len && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.split('-');
    let year = parse_digits(parts.next()?, 4)?;
    let month = parse_digits(parts.next()?, 2)?;
    let day = parse_digits(parts.next()?, 2)?;
    if parts.next().is_some() || !(1..=12).contains(&month) || day < 1 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    // A day past the end of its month comes back as another date.
    (civil_from_days(days) == (year, month, day)).then_some(days)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number from [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Returns the most common difference between consecutive ordinals (the smallest on a
/// tie), or `None` for fewer than two.
pub fn regular_step(ordinals: &[i64]) -> Option<i64> {
    let mut steps: Vec<i64> = ordinals.windows(2).map(|w| w[1] - w[0]).collect();
    steps.sort_unstable();
    let mut best: Option<(i64, usize)> = None;
    for run in steps.chunk_by(|a, b| a == b) {
        if best.is_none_or(|(_, count)| run.len() > count) {
            best = Some((run[0], run.len()));
        }
    }
    best.map(|(step, _)| step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip() {
        for (text, format) in [
            ("1700", TimeFormat::Integer),
            ("1949-01", TimeFormat::YearMonth),
            ("1960-12", TimeFormat::YearMonth),
            ("2024-02-29", TimeFormat::Date),
            ("2023-01-01T00:57:00", TimeFormat::DateTime),
        ] {
            assert_eq!(TimeFormat::infer(text), Some(format), "{text}");
            let ordinal = format.parse(text).unwrap();
            assert_eq!(format.format(ordinal), text);
        }
    }

    #[test]
    fn invalid_dates_do_not_parse() {
        assert_eq!(TimeFormat::Date.parse("2023-02-29"), None);
        assert_eq!(TimeFormat::YearMonth.parse("1949-13"), None);
        assert_eq!(TimeFormat::infer("January"), None);
    }

    #[test]
    fn months_and_minutes_step_regularly() {
        let months: Vec<i64> = ["1949-11", "1949-12", "1950-01"]
            .iter()
            .map(|t| TimeFormat::YearMonth.parse(t).unwrap())
            .collect();
        assert_eq!(regular_step(&months), Some(1));
        let step = regular_step(&months).unwrap();
        assert_eq!(TimeFormat::YearMonth.format(months[2] + step), "1950-02");
        assert_eq!(regular_step(&[0, 60, 120, 300]), Some(60));
    }
}
