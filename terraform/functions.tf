# Cloud Functions gen2, one per functions/<name>/main.py, from the bundles `make stage`
# writes to build/<name>/ (main.py + vendored package + requirements.txt). Each bundle is
# zipped here and uploaded under a name carrying its content hash, so any code change
# gives a new object and a redeploy. Pub/Sub-driven functions get no Eventarc trigger:
# our own push subscriptions (pubsub.tf) call their URL, with dead letters and ack
# deadlines.

locals {
  # trigger: "schedule" (Cloud Scheduler, scheduler.tf), "pubsub" (push subscription,
  # pubsub.tf) or "http" (the API; callers need run.invoker unless var.api_public). Topic and subscription names come from
  # prometheus_trader.usecases.names (Topics / Subscriptions).
  functions = {
    collector    = { trigger = "schedule", schedule = "* * * * *", topic = null, subscription = null, ordered = false }
    ranker       = { trigger = "schedule", schedule = var.ranker_schedule, topic = null, subscription = null, ordered = false }
    dispatcher   = { trigger = "pubsub", schedule = null, topic = "signals", subscription = "dispatcher", ordered = false }
    executor     = { trigger = "pubsub", schedule = null, topic = "executions", subscription = "executor", ordered = true }
    evaluator    = { trigger = "pubsub", schedule = null, topic = "events", subscription = "evaluator", ordered = false }
    notifier     = { trigger = "pubsub", schedule = null, topic = "events", subscription = "notifier", ordered = false }
    reporter     = { trigger = "schedule", schedule = "0 0 * * *", topic = null, subscription = null, ordered = false }
    housekeeping = { trigger = "schedule", schedule = var.housekeeping_schedule, topic = null, subscription = null, ordered = false }
    api          = { trigger = "http", schedule = null, topic = null, subscription = null, ordered = false }
    telegram     = { trigger = "http", schedule = null, topic = null, subscription = null, ordered = false }
  }

  scheduled_functions = { for name, f in local.functions : name => f if f.trigger == "schedule" }
  push_functions      = { for name, f in local.functions : name => f if f.trigger == "pubsub" }

  rank_interval_minutes = var.ranker_schedule == "* * * * *" ? 1 : tonumber(trimprefix(split(" ", var.ranker_schedule)[0], "*/"))

  # Settings the package reads (prometheus_trader.app.settings, env prefix PROMETHEUS_).
  common_env = merge({
    GOOGLE_CLOUD_PROJECT                 = var.project_id
    PROMETHEUS_BACKEND                   = "gcp"
    PROMETHEUS_GCP_PROJECT               = var.project_id
    PROMETHEUS_FIRESTORE_DATABASE        = var.firestore_database
    PROMETHEUS_MARKET_BUCKET             = google_storage_bucket.data["market"].name
    PROMETHEUS_MARKET_PREFIX             = local.market_prefix
    PROMETHEUS_BLOB_BUCKET               = google_storage_bucket.data["blobs"].name
    PROMETHEUS_SECRET_PREFIX             = var.user_secret_prefix
    PROMETHEUS_COLLECT_INTERVAL_MINUTES  = "1"
    PROMETHEUS_RANK_INTERVAL_MINUTES     = tostring(local.rank_interval_minutes)
    PROMETHEUS_MAX_DELIVERY_ATTEMPTS     = tostring(var.max_delivery_attempts)
    PROMETHEUS_LOG_LEVEL                 = "INFO"
    PROMETHEUS_TRADING_ENV               = var.trading_env
    PROMETHEUS_ALLOW_LIVE                = tostring(var.allow_live)
    PROMETHEUS_MONITOR_CLOSE_CONCURRENCY = tostring(var.monitor_close_concurrency)
    }, var.collector_exchange == "" ? {} : {
    PROMETHEUS_COLLECTOR_EXCHANGE = var.collector_exchange
    }, var.stream_exchange == "" ? {} : {
    PROMETHEUS_STREAM_EXCHANGE = var.stream_exchange
  }, var.extra_env)
}

locals {
  # Content hash of each bundle: the SHA-256 over file names and bytes that `make stage`
  # writes to build/manifest.json (independent of zip timestamps), else the zip's own.
  staged_manifest_file = "${var.build_dir}/manifest.json"
  staged_manifest      = jsondecode(fileexists(local.staged_manifest_file) ? file(local.staged_manifest_file) : "{}")
  bundle_digest = {
    for name in keys(local.functions) :
    name => substr(try(local.staged_manifest[name], data.archive_file.function[name].output_sha256), 0, 24)
  }
}

data "archive_file" "function" {
  for_each = local.functions

  type             = "zip"
  source_dir       = "${var.build_dir}/${each.key}"
  output_path      = "${path.module}/.terraform/bundles/${each.key}.zip"
  output_file_mode = "0644"
  excludes         = ["**/__pycache__/**", "**/*.pyc"]
}

resource "google_storage_bucket_object" "function_source" {
  for_each = local.functions

  bucket       = google_storage_bucket.sources.name
  name         = "functions/${each.key}-${local.bundle_digest[each.key]}.zip"
  source       = data.archive_file.function[each.key].output_path
  content_type = "application/zip"
}

resource "google_cloudfunctions2_function" "fn" {
  for_each = local.functions

  project     = var.project_id
  location    = var.region
  name        = "${var.name_prefix}-${each.key}"
  description = "Prometheus ${each.key} (${each.value.trigger})"

  build_config {
    runtime         = var.function_runtime
    entry_point     = each.key # functions/<name>/main.py defines `def <name>(...)`
    service_account = google_service_account.builder.id

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.function_source[each.key].name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.runtime[each.key].email
    available_memory                 = var.function_settings[each.key].memory
    available_cpu                    = var.function_settings[each.key].cpu
    timeout_seconds                  = var.function_settings[each.key].timeout_seconds
    min_instance_count               = var.function_settings[each.key].min_instance_count
    max_instance_count               = var.function_settings[each.key].max_instance_count
    max_instance_request_concurrency = var.function_settings[each.key].concurrency
    # Scheduler and Pub/Sub push from this project count as internal traffic.
    ingress_settings               = each.value.trigger == "http" ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    environment_variables          = local.common_env
  }

  depends_on = [
    google_project_service.apis,
    google_project_iam_member.builder,
    google_storage_bucket_iam_member.builder_sources,
  ]
}
