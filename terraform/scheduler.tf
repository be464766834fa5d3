# Cloud Scheduler jobs for the scheduled functions (cadences in functions.tf, SPEC §1):
# collector every minute, ranker every 1-5 minutes (var.ranker_schedule), reporter daily at
# 00:00 UTC, housekeeping on var.housekeeping_schedule. Each call carries an OIDC token of
# the scheduler identity, which holds run.invoker on that function's service only.

resource "google_cloud_scheduler_job" "fn" {
  for_each = local.scheduled_functions

  project          = var.project_id
  region           = var.region
  name             = "${var.name_prefix}-${each.key}"
  description      = "Runs the ${each.key} function (${each.value.schedule} UTC)."
  schedule         = each.value.schedule
  time_zone        = "UTC"
  attempt_deadline = "${max(15, min(1800, var.function_settings[each.key].timeout_seconds + 5))}s"

  retry_config {
    # A missed minute is caught up by the next run (collection is incremental), so the
    # frequent jobs do not retry; the daily report does.
    retry_count          = each.key == "reporter" ? 3 : 0
    min_backoff_duration = "30s"
    max_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.fn[each.key].service_config[0].uri
    body        = base64encode(jsonencode({ job = each.key }))
    headers = {
      "Content-Type" = "application/json"
    }

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.fn[each.key].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.scheduler_invoker]
}
