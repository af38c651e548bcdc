//! Human durations as GitLab accepts them in `timeout:` (ChronicDuration):
//! `3600`, `10s`, `1h 30m`, `1h30m`, `10 minutes`, `1 hour and 5 mins`, `1.5h`.

/// Parse a duration into whole seconds. `None` if it is not a duration or is
/// zero. Never panics; overflow yields `None`.
pub fn parse_duration(input: &str) -> Option<u64> {
    let s = input.trim().to_ascii_lowercase();
    if s.is_empty() {
        return None;
    }
    // A bare number is seconds.
    if let Ok(n) = s.parse::<u64>() {
        return (n > 0).then_some(n);
    }
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut total: f64 = 0.0;
    let mut saw_any = false;
    while i < chars.len() {
        // Separators.
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        // "and" between components.
        if chars[i..].starts_with(&['a', 'n', 'd']) {
            i += 3;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
            i += 1;
        }
        if start == i {
            return None;
        }
        let num: f64 = chars[start..i].iter().collect::<String>().parse().ok()?;
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let ustart = i;
        while i < chars.len() && chars[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit: String = chars[ustart..i].iter().collect();
        let mult = unit_seconds(&unit)?;
        total += num * mult;
        saw_any = true;
    }
    if !saw_any || !total.is_finite() || total < 1.0 || total > u32::MAX as f64 * 1000.0 {
        return None;
    }
    Some(total.round() as u64)
}

fn unit_seconds(unit: &str) -> Option<f64> {
    Some(match unit {
        // A number followed directly by another component counts as seconds.
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "wk" | "wks" | "week" | "weeks" => 604_800.0,
        "mo" | "mos" | "month" | "months" => 2_592_000.0,
        "y" | "yr" | "yrs" | "year" | "years" => 31_557_600.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_duration as p;

    #[test]
    fn accepted_forms() {
        assert_eq!(p("10s"), Some(10));
        assert_eq!(p("3600"), Some(3600));
        assert_eq!(p("1h 30m"), Some(5400));
        assert_eq!(p("1h30m"), Some(5400));
        assert_eq!(p("10 minutes"), Some(600));
        assert_eq!(p("1 hour and 5 mins"), Some(3900));
        assert_eq!(p("1.5h"), Some(5400));
        assert_eq!(p("2 days"), Some(172_800));
        assert_eq!(p(" 1 Week "), Some(604_800));
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "",
            "0",
            "abc",
            "10 parsecs",
            "h",
            "-5s",
            "1e99999h",
            "..h",
            "0s",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }
}
