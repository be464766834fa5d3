# Alerts: any ERROR (or worse) log line from a function or the worker, and a worker whose
# heartbeat log line stopped (the loop stalled or the instance is gone). Both notify
# var.alert_email when set; they always show in the console.

locals {
  service_names = concat(
    [for name in keys(local.functions) : "${var.name_prefix}-${name}"],
    ["${var.name_prefix}-worker"],
  )
  service_filter        = join(" OR ", [for s in local.service_names : "resource.labels.service_name=\"${s}\""])
  notification_channels = var.alert_email == "" ? [] : [google_monitoring_notification_channel.email[0].id]
}

resource "google_monitoring_notification_channel" "email" {
  count = var.alert_email == "" ? 0 : 1

  project      = var.project_id
  display_name = "Prometheus alerts"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }
}

resource "google_logging_metric" "errors" {
  project     = var.project_id
  name        = "${var.name_prefix}/errors"
  description = "ERROR-or-worse log entries of Prometheus functions and the worker, by service."
  filter      = "resource.type=\"cloud_run_revision\" AND severity>=ERROR AND (${local.service_filter})"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Prometheus errors"

    labels {
      key         = "service"
      value_type  = "STRING"
      description = "Cloud Run service (function or worker)."
    }
  }

  label_extractors = {
    service = "EXTRACT(resource.labels.service_name)"
  }
}

resource "google_logging_metric" "worker_heartbeat" {
  project     = var.project_id
  name        = "${var.name_prefix}/worker_heartbeat"
  description = "Heartbeat log lines of the exit-monitor worker."
  filter      = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${var.name_prefix}-worker\" AND jsonPayload.message=\"${var.heartbeat_log_message}\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Prometheus worker heartbeats"
  }
}

resource "google_monitoring_alert_policy" "errors" {
  project               = var.project_id
  display_name          = "Prometheus: errors logged"
  combiner              = "OR"
  notification_channels = local.notification_channels
  severity              = "ERROR"

  conditions {
    display_name = "ERROR log entries > 0 in 5 min"

    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.errors.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.service"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A Prometheus function or the worker logged an ERROR. Logs Explorer: `severity>=ERROR resource.type=\"cloud_run_revision\"`. See docs/deploy.md, Operations."
  }
}

resource "google_monitoring_alert_policy" "worker_heartbeat_stale" {
  project               = var.project_id
  display_name          = "Prometheus: worker heartbeat stale"
  combiner              = "OR"
  notification_channels = local.notification_channels
  severity              = "CRITICAL"

  conditions {
    display_name = "No worker heartbeat for ${var.heartbeat_stale_seconds}s"

    condition_absent {
      filter   = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.worker_heartbeat.name}\" AND resource.type=\"cloud_run_revision\""
      duration = "${var.heartbeat_stale_seconds}s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "3600s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The exit monitor stopped logging its heartbeat: open positions are not being watched. Check the ${var.name_prefix}-worker Cloud Run service logs; see docs/deploy.md, Operations."
  }
}
