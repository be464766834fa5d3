# Buckets: uniform bucket-level access, public access prevention enforced, access logs,
# and lifecycle rules per kind of data. Market data follows the store's layout
# <exchange>/<market_type>/<kind>/date=YYYY-MM-DD/ (duckdb_market_store.py).

locals {
  market_types = ["perp", "spot"]

  bucket_names = { for key, b in google_storage_bucket.data : key => b.name }

  # The market store writes under "market/"; "replay/" holds recorded data the replay
  # exchange serves and is never aged out.
  market_prefix = "market"

  # Raw trade prints: the monitor keeps 15 minutes in memory; stored copies are short-lived.
  trade_prefixes = flatten([
    for exchange in var.exchanges : [for market in local.market_types : "${local.market_prefix}/${exchange}/${market}/trades/"]
  ])

  # Bucket key -> purpose and lifecycle rules ({action, storage_class, age, prefixes,
  # noncurrent_days}); an empty prefix list means the whole bucket.
  buckets = {
    market = {
      purpose = "market data (Parquet, DuckDB) and recorded data to replay"
      rules = [
        { action = "Delete", storage_class = null, age = var.trades_retention_days, prefixes = local.trade_prefixes, noncurrent_days = null },
        { action = "SetStorageClass", storage_class = "NEARLINE", age = var.market_nearline_after_days, prefixes = ["${local.market_prefix}/"], noncurrent_days = null },
        { action = "SetStorageClass", storage_class = "COLDLINE", age = var.market_coldline_after_days, prefixes = ["${local.market_prefix}/"], noncurrent_days = null },
        { action = "Delete", storage_class = null, age = var.market_retention_days, prefixes = ["${local.market_prefix}/"], noncurrent_days = null },
        # Partitions are rewritten as bars arrive: old generations go after a day.
        { action = "Delete", storage_class = null, age = null, prefixes = [], noncurrent_days = 1 },
      ]
    }
    # Reports (reports/<user>/<day>.json|html|csv, the CSV being the tax export) and the
    # audit log (audit/orders/<day>/<user>.jsonl, appended with generation preconditions; every
    # append keeps the previous generation for audit_noncurrent_days; a batched execution's
    # orders: audit/orders/<day>/batch-<signal>-<hash>.jsonl, written once).
    blobs = {
      purpose = "daily reports and the audit log"
      rules = [
        { action = "SetStorageClass", storage_class = "NEARLINE", age = 30, prefixes = ["reports/"], noncurrent_days = null },
        { action = "SetStorageClass", storage_class = "COLDLINE", age = 365, prefixes = ["reports/"], noncurrent_days = null },
        { action = "Delete", storage_class = null, age = var.report_retention_days, prefixes = ["reports/"], noncurrent_days = null },
        { action = "SetStorageClass", storage_class = "COLDLINE", age = 90, prefixes = ["audit/"], noncurrent_days = null },
        { action = "Delete", storage_class = null, age = var.audit_retention_days, prefixes = ["audit/"], noncurrent_days = null },
        { action = "Delete", storage_class = null, age = null, prefixes = [], noncurrent_days = var.audit_noncurrent_days },
      ]
    }
    backtests = {
      purpose = "backtest results"
      rules = [
        { action = "Delete", storage_class = null, age = var.backtest_retention_days, prefixes = [], noncurrent_days = null },
        { action = "Delete", storage_class = null, age = null, prefixes = [], noncurrent_days = 7 },
      ]
    }
  }
}

resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:This is the access-log sink; logging it into itself would loop.
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name_prefix}-access-logs"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets

  versioning {
    enabled = true
  }

  lifecycle_rule {
    action {
      type = "Delete"
    }
    condition {
      age = var.access_log_retention_days
    }
  }

  lifecycle_rule {
    action {
      type = "Delete"
    }
    condition {
      days_since_noncurrent_time = 1
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "data" {
  for_each = local.buckets

  project                     = var.project_id
  name                        = "${var.project_id}-${var.name_prefix}-${each.key}"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets
  labels = {
    purpose = each.key
  }

  versioning {
    enabled = true
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = each.key
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.rules
    content {
      action {
        type          = lifecycle_rule.value.action
        storage_class = lifecycle_rule.value.storage_class
      }
      condition {
        age                        = lifecycle_rule.value.age
        matches_prefix             = lifecycle_rule.value.prefixes
        days_since_noncurrent_time = lifecycle_rule.value.noncurrent_days
        with_state                 = lifecycle_rule.value.noncurrent_days == null ? "ANY" : "ARCHIVED"
      }
    }
  }

  lifecycle_rule {
    action {
      type = "AbortIncompleteMultipartUpload"
    }
    condition {
      age = 1
    }
  }

  depends_on = [google_project_service.apis]
}

# Function source zips: each deploy uploads new content-hashed objects; old ones go.
resource "google_storage_bucket" "sources" {
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name_prefix}-sources"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true # only rebuildable bundles live here

  versioning {
    enabled = true
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "sources"
  }

  lifecycle_rule {
    action {
      type = "Delete"
    }
    condition {
      age = 30
    }
  }

  lifecycle_rule {
    action {
      type = "Delete"
    }
    condition {
      days_since_noncurrent_time = 1
    }
  }

  depends_on = [google_project_service.apis]
}
