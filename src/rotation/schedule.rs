//! The rotation check's cron schedule (6 fields with seconds, host local time).

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

/// Runs `checker` on `schedule` (host local time) for as long as the agent runs, and
/// records each result in `status`. A check still running when the next one is due makes
/// that one skip, so checks never overlap.
///
/// Note: tokio-cron-scheduler fixes the UTC offset when the job is created, so across a
/// daylight-saving change the check runs an hour off until the agent restarts.
pub async fn start(
    checker: std::sync::Arc<super::Checker>,
    schedule: &str,
    status: super::SharedStatus,
) -> Result<tokio_cron_scheduler::JobScheduler, String> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let fail = |e: tokio_cron_scheduler::JobSchedulerError| {
        format!("cannot start the rotation check scheduler: {e}")
    };
    let scheduler = JobScheduler::new().await.map_err(fail)?;
    let running = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let job = Job::new_async_tz(schedule, chrono::Local, move |_, _| {
        let checker = checker.clone();
        let status = status.clone();
        let running = running.clone();
        Box::pin(async move {
            let Ok(_guard) = running.try_lock() else {
                tracing::warn!("the previous rotation check is still running; skipping this one");
                return;
            };
            super::run_and_record(&checker, &status).await;
        })
    })
    .map_err(fail)?;
    scheduler.add(job).await.map_err(fail)?;
    scheduler.start().await.map_err(fail)?;
    Ok(scheduler)
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
