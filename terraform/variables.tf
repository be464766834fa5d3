# Inputs. Defaults are the production settings; scripts/cost.py reads them for its estimate.

variable "project_id" {
  description = "Google Cloud project to deploy into (dedicated to Prometheus)."
  type        = string
}

variable "region" {
  description = "Region of the functions, the worker, the buckets and the scheduler jobs."
  type        = string
  default     = "europe-west1"
}

variable "name_prefix" {
  description = "Prefix of service, bucket and service-account names."
  type        = string
  default     = "prometheus"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.name_prefix))
    error_message = "name_prefix: 2-15 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "build_dir" {
  description = "Folder of staged function bundles (make stage writes build/<name>/)."
  type        = string
  default     = "../build"
}

variable "worker_image" {
  description = "Container image of the exit-monitor worker (infra/Dockerfile.worker). Empty: <region>-docker.pkg.dev/<project>/<prefix>/worker:<worker_image_tag>."
  type        = string
  default     = ""
}

variable "worker_image_tag" {
  description = "Tag of the worker image in the project's Artifact Registry (Cloud Build passes the commit)."
  type        = string
  default     = "latest"
}

# --- cadences (SPEC §1, §3, §4, §7) -------------------------------------------------

variable "ranker_schedule" {
  description = "Cron of the ranker: every 1 to 5 minutes (SPEC §4)."
  type        = string
  default     = "*/5 * * * *"

  validation {
    condition     = contains(["* * * * *", "*/1 * * * *", "*/2 * * * *", "*/3 * * * *", "*/4 * * * *", "*/5 * * * *"], var.ranker_schedule)
    error_message = "ranker_schedule must run every 1 to 5 minutes (\"*/N * * * *\", N = 1..5)."
  }
}

variable "housekeeping_schedule" {
  description = "Cron of housekeeping (watchlist expiry, top-liquid refresh)."
  type        = string
  default     = "*/15 * * * *"
}

# --- functions ----------------------------------------------------------------------

variable "function_runtime" {
  description = "Cloud Functions runtime."
  type        = string
  default     = "python311"
}

variable "function_settings" {
  description = "Size and scaling of each function (memory, CPU, timeout, instances, concurrent requests per instance)."
  type = map(object({
    memory             = string
    cpu                = string
    timeout_seconds    = number
    min_instance_count = number
    max_instance_count = number
    concurrency        = number
  }))
  default = {
    collector    = { memory = "1Gi", cpu = "1", timeout_seconds = 55, min_instance_count = 0, max_instance_count = 1, concurrency = 1 }
    ranker       = { memory = "2Gi", cpu = "1", timeout_seconds = 240, min_instance_count = 0, max_instance_count = 1, concurrency = 1 }
    dispatcher   = { memory = "512Mi", cpu = "1", timeout_seconds = 60, min_instance_count = 0, max_instance_count = 5, concurrency = 1 }
    executor     = { memory = "512Mi", cpu = "1", timeout_seconds = 120, min_instance_count = 0, max_instance_count = 20, concurrency = 1 }
    evaluator    = { memory = "1Gi", cpu = "1", timeout_seconds = 120, min_instance_count = 0, max_instance_count = 5, concurrency = 1 }
    notifier     = { memory = "256Mi", cpu = "0.333", timeout_seconds = 60, min_instance_count = 0, max_instance_count = 10, concurrency = 1 }
    reporter     = { memory = "1Gi", cpu = "1", timeout_seconds = 540, min_instance_count = 0, max_instance_count = 1, concurrency = 1 }
    housekeeping = { memory = "512Mi", cpu = "1", timeout_seconds = 300, min_instance_count = 0, max_instance_count = 1, concurrency = 1 }
    api          = { memory = "512Mi", cpu = "1", timeout_seconds = 60, min_instance_count = 0, max_instance_count = 10, concurrency = 20 }
    telegram     = { memory = "256Mi", cpu = "0.333", timeout_seconds = 30, min_instance_count = 0, max_instance_count = 2, concurrency = 1 }
  }
}

variable "api_public" {
  description = "Let anyone reach the API's URL (allUsers run.invoker): users then authenticate to the app with their bearer tokens (docs/api.md). False: only api_invoker_members reach it (IAM in front of the app's own auth)."
  type        = bool
  default     = false
}

variable "api_invoker_members" {
  description = "IAM members allowed to call the API (e.g. \"user:you@example.com\") when api_public is false."
  type        = list(string)
  default     = []
}

# --- worker -------------------------------------------------------------------------

variable "worker_cpu" {
  description = "vCPU of the always-on exit monitor."
  type        = string
  default     = "1"
}

variable "worker_memory" {
  description = "Memory of the always-on exit monitor."
  type        = string
  default     = "512Mi"
}

variable "worker_health_path" {
  description = "HTTP path of the worker's startup and liveness probes (served on $PORT)."
  type        = string
  default     = "/healthz"
}

# --- Pub/Sub ------------------------------------------------------------------------

variable "max_delivery_attempts" {
  description = "Deliveries before a message goes to its topic's dead-letter topic (5-100)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "Pub/Sub accepts 5 to 100 delivery attempts."
  }
}

variable "retry_minimum_backoff" {
  description = "Shortest wait before a failed push is retried."
  type        = string
  default     = "10s"
}

variable "retry_maximum_backoff" {
  description = "Longest wait before a failed push is retried."
  type        = string
  default     = "600s"
}

variable "message_retention" {
  description = "How long undelivered and dead-lettered messages are kept."
  type        = string
  default     = "604800s"
}

# --- storage, data ------------------------------------------------------------------

variable "firestore_location" {
  description = "Firestore location (a region such as europe-west1, or a multi-region such as eur3 / nam5)."
  type        = string
  default     = "europe-west1"
}

variable "firestore_database" {
  description = "Firestore database id."
  type        = string
  default     = "(default)"
}

variable "exchanges" {
  description = "Exchanges the collector stores (first folder of the market-data layout)."
  type        = list(string)
  default     = ["binance", "bybit"]
}

variable "trades_retention_days" {
  description = "Days raw trade prints stay in the market-data bucket (the monitor keeps its 15-minute window in memory)."
  type        = number
  default     = 7
}

variable "market_nearline_after_days" {
  description = "Days before market-data objects move to Nearline."
  type        = number
  default     = 30
}

variable "market_coldline_after_days" {
  description = "Days before market-data objects move to Coldline."
  type        = number
  default     = 365
}

variable "market_retention_days" {
  description = "Days bars are kept (SPEC: at least one year)."
  type        = number
  default     = 730

  validation {
    condition     = var.market_retention_days >= 365
    error_message = "Bars are kept for at least a year (SPEC §3)."
  }
}

variable "report_retention_days" {
  description = "Days daily reports (HTML/JSON and the CSV tax export) are kept."
  type        = number
  default     = 2555
}

variable "audit_retention_days" {
  description = "Days audit-log objects are kept."
  type        = number
  default     = 2555
}

variable "audit_noncurrent_days" {
  description = "Days a replaced generation (of an appended audit log, a rewritten report or partition) is kept in the blobs bucket."
  type        = number
  default     = 30
}

variable "backtest_retention_days" {
  description = "Days backtest results are kept."
  type        = number
  default     = 90
}

variable "access_log_retention_days" {
  description = "Days bucket access logs are kept."
  type        = number
  default     = 90
}

variable "force_destroy_buckets" {
  description = "Let terraform destroy delete non-empty buckets (test projects only)."
  type        = bool
  default     = false
}

# --- secrets, alerts ----------------------------------------------------------------

variable "user_secret_prefix" {
  description = "Secret-id prefix of per-user exchange-key secrets (PROMETHEUS_SECRET_PREFIX; the API writes them, executor and worker read them)."
  type        = string
  default     = "prometheus-user-"
}

variable "alert_email" {
  description = "Email address for alerts (empty: alerts show in the console only)."
  type        = string
  default     = ""
}

variable "heartbeat_log_message" {
  description = "The worker's heartbeat log line (jsonPayload.message); its absence raises an alert."
  type        = string
  default     = "worker heartbeat"
}

variable "heartbeat_stale_seconds" {
  description = "Alert when no worker heartbeat has been logged for this long."
  type        = number
  default     = 300
}

variable "collector_exchange" {
  description = "Venue whose public market data the collector reads through ccxt (binance = USD-M, bybit = linear); empty = replay the recorded data under replay/ (the executor's replay exchange reads the same, so the default keeps both on one source)."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "binance", "binanceusdm", "bybit"], var.collector_exchange)
    error_message = "collector_exchange must be binance, binanceusdm, bybit or empty."
  }
}

variable "stream_exchange" {
  description = "Venue whose trades the exit worker streams over ccxt's websocket API for every symbol with an open position (binance = USD-M, bybit = linear perpetuals; REST fallback, stale-feed alerts); empty = the worker polls its exchange adapter (the replay exchange reads the market store). Set it with collector_exchange = the same venue."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "binance", "binanceusdm", "bybit"], var.stream_exchange)
    error_message = "stream_exchange must be binance, binanceusdm, bybit or empty (streaming is implemented for Binance USD-M and Bybit linear)."
  }
}

variable "monitor_close_concurrency" {
  description = "Threads the exit worker runs one cycle's closes on (each exchange account's closes in order on one thread; the decisions stay on the cycle's thread): a crash that closes hundreds of positions at once overlaps their exchange and Firestore round trips instead of queueing them. 1 = one close after another."
  type        = number
  default     = 16

  validation {
    condition     = var.monitor_close_concurrency >= 1 && var.monitor_close_concurrency <= 64
    error_message = "monitor_close_concurrency must be between 1 and 64."
  }
}

variable "trading_env" {
  description = "Where mode=live users' orders go: live = the venue with their live keys (needs allow_live), demo = the venue's demo trading with their demo keys (a demo deployment). Paper users always stay on the paper ledger."
  type        = string
  default     = "live"

  validation {
    condition     = contains(["demo", "live"], var.trading_env)
    error_message = "trading_env must be demo or live."
  }
}

variable "allow_live" {
  description = "Deployment-wide switch for real-money orders (PROMETHEUS_ALLOW_LIVE); each user must also switch to mode=live with live keys."
  type        = bool
  default     = false
}

variable "extra_env" {
  description = "Extra environment variables for every function and the worker (PROMETHEUS_* settings)."
  type        = map(string)
  default     = {}
}
