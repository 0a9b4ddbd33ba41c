//! Runs the rotation check on `rotation.schedule` in the daemon (`config::schedule` parses
//! the expression).

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
