//! `rotation.schedule`: the rotation check's cron expression (6 fields with seconds, host
//! local time), parsed as the scheduler will parse it.

/// Parses a schedule exactly as tokio-cron-scheduler will (croner, seconds required,
/// day-of-month AND day-of-week), so `config check` accepts only what the daemon can run.
pub fn parse(schedule: &str) -> Result<croner::Cron, String> {
    let fields = schedule.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "`{schedule}` has {fields} fields; write 6 (sec min hour day month weekday), e.g. \"0 0 9 * * *\""
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(schedule)
        .map_err(|e| format!("`{schedule}` is not a cron schedule ({e}); e.g. \"0 0 9 * * *\""))
}

/// The next time `schedule` fires after now, in host local time.
pub fn next_after_now(schedule: &str) -> Option<std::time::SystemTime> {
    let cron = parse(schedule).ok()?;
    let next = cron
        .find_next_occurrence(&chrono::Local::now(), false)
        .ok()?;
    Some(std::time::SystemTime::from(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_fields_with_seconds() {
        assert!(parse("0 0 9 * * *").is_ok());
        assert!(parse("*/5 * * * * *").is_ok());
        assert!(parse("0 9 * * *").is_err(), "5 fields");
        assert!(parse("0 0 25 * * *").is_err(), "hour 25");
        assert!(parse("daily").is_err());
    }
}
