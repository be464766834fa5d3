# Service accounts and the roles each needs, nothing more. One identity per function and
# one for the worker; two invoker identities (Cloud Scheduler, Pub/Sub push); one for
# building function sources. No identity gets a basic role (owner/editor/viewer); every
# grant except Firestore's and log writing is on a single topic, bucket, secret or service.
# tests/infra/test_iam_least_privilege.py derives what each identity's code uses (the
# use-cases its entry point runs and the ports they take) and fails on any extra grant.

locals {
  runtime_identities = concat(keys(local.functions), ["worker"])

  # Firestore has no finer-grained IAM than the database: every component that has a
  # state store reads and writes its own collections through the port. The collector has
  # none (exchange -> market store only).
  firestore_users = [
    "ranker", "dispatcher", "executor", "evaluator", "notifier", "reporter", "housekeeping",
    "api", "worker", "telegram",
  ]

  # Topic -> identities that publish to it (SPEC §1 data flow).
  topic_publishers = {
    signals    = ["ranker"]
    executions = ["dispatcher"]
    events     = ["executor", "reporter", "worker", "housekeeping"]
  }

  # Topic -> push consumers that dead-letter a message they cannot read yet (an unknown
  # schema_version) to "<topic>-dead-letter" themselves (app.triggers.push).
  dead_letter_publishers = {
    signals    = ["dispatcher"]
    executions = ["executor"]
    events     = ["evaluator", "notifier"]
  }

  # Bucket key (storage.tf) -> role -> identities. objectUser where a component writes
  # (an audit append rewrites the user's day object under a generation precondition), viewer
  # where it only reads. The replay exchange reads recorded data from the market bucket.
  # Backtest results are written by operators from the CLI: no runtime grant.
  bucket_grants = {
    market = {
      "roles/storage.objectUser"   = ["collector"]
      "roles/storage.objectViewer" = ["ranker", "executor", "worker", "housekeeping", "reporter"]
    }
    blobs = {
      "roles/storage.objectUser"   = ["executor", "reporter", "worker"]
      "roles/storage.objectViewer" = ["api", "notifier"]
    }
  }

  # Static secret (secrets.tf) -> identities that read it.
  secret_readers = {
    sendgrid-api-key    = ["notifier", "housekeeping"] # housekeeping flushes email digests
    telegram-bot-token  = ["notifier"]
    webhook-signing-key = ["notifier"]
    telegram-hook-token = ["telegram"]
  }

  # Per-user exchange keys: the API writes them, only the executor and the worker read them
  # (they trade for every user, so the scope is the key-name prefix, not one user).
  user_secret_readers = ["executor", "worker"]
  user_secret_writers = ["api"]

  # Identities that sign URLs with their own key through IAM signBlob (report links).
  url_signers = ["api"]

  topic_publisher_grants = merge([
    for topic, ids in local.topic_publishers : {
      for id in ids : "${topic}/${id}" => { topic = topic, identity = id }
    }
  ]...)

  bucket_role_grants = merge(flatten([
    for bucket, roles in local.bucket_grants : [
      for role, ids in roles : {
        for id in ids : "${bucket}/${role}/${id}" => { bucket = bucket, role = role, identity = id }
      }
    ]
  ])...)

  dead_letter_publisher_grants = merge([
    for topic, ids in local.dead_letter_publishers : {
      for id in ids : "${topic}/${id}" => { topic = topic, identity = id }
    }
  ]...)

  secret_reader_grants = merge([
    for secret, ids in local.secret_readers : {
      for id in ids : "${secret}/${id}" => { secret = secret, identity = id }
    }
  ]...)

  user_secret_name_prefix = "projects/${data.google_project.this.number}/secrets/${var.user_secret_prefix}"
  # exchange keys only (usecases.controls.exchange_key_secret)
  exchange_key_name_prefix = "${local.user_secret_name_prefix}exchange-keys-"
}

resource "google_service_account" "runtime" {
  for_each = toset(local.runtime_identities)

  project      = var.project_id
  account_id   = "${var.name_prefix}-${each.key}"
  display_name = "Prometheus ${each.key}"
  description  = "Runtime identity of the ${each.key} ${each.key == "worker" ? "Cloud Run worker" : "function"}."
}

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "Prometheus scheduler invoker"
  description  = "Identity in the OIDC tokens Cloud Scheduler sends to the scheduled functions."
}

resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-push"
  display_name = "Prometheus Pub/Sub push invoker"
  description  = "Identity in the OIDC tokens of our push subscriptions."
}

resource "google_service_account" "builder" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-fn-builder"
  display_name = "Prometheus function builder"
  description  = "Cloud Build identity that turns staged sources into function images."
}

# --- project-level grants (no finer scope exists) ------------------------------------

resource "google_project_iam_member" "firestore_user" {
  for_each = toset(local.firestore_users)

  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.runtime[each.key].member
}

resource "google_project_iam_member" "builder" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/artifactregistry.writer",
  ])

  project = var.project_id
  role    = each.key
  member  = google_service_account.builder.member
}

# Cloud Functions copies each source zip into its own gcf-v2-sources-* bucket before
# the build reads it.
resource "google_project_iam_member" "builder_gcf_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.builder.member

  condition {
    title       = "gcf-v2-sources-only"
    description = "Only the buckets Cloud Functions stages sources in"
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-\")"
  }
}

# --- topics --------------------------------------------------------------------------

resource "google_pubsub_topic_iam_member" "publisher" {
  for_each = local.topic_publisher_grants

  project = var.project_id
  topic   = google_pubsub_topic.topic[each.value.topic].name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.runtime[each.value.identity].member
}

resource "google_pubsub_topic_iam_member" "dead_letter_runtime_publisher" {
  for_each = local.dead_letter_publisher_grants

  project = var.project_id
  topic   = google_pubsub_topic.dead_letter[each.value.topic].name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.runtime[each.value.identity].member
}

# The Pub/Sub service agent forwards undeliverable messages to the dead-letter topic and
# must be able to acknowledge them on the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = google_pubsub_topic.dead_letter

  project = var.project_id
  topic   = each.value.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = google_pubsub_subscription.push

  project      = var.project_id
  subscription = each.value.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# The service agent mints the push OIDC tokens for the push identity.
resource "google_service_account_iam_member" "push_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# --- buckets -------------------------------------------------------------------------

resource "google_storage_bucket_iam_member" "runtime" {
  for_each = local.bucket_role_grants

  bucket = local.bucket_names[each.value.bucket]
  role   = each.value.role
  member = google_service_account.runtime[each.value.identity].member
}

resource "google_storage_bucket_iam_member" "builder_sources" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.builder.member
}

# --- secrets -------------------------------------------------------------------------

resource "google_secret_manager_secret_iam_member" "reader" {
  for_each = local.secret_reader_grants

  project   = var.project_id
  secret_id = google_secret_manager_secret.static[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime[each.value.identity].member
}

# Per-user secrets are created at run time, so their IAM cannot be a per-secret binding
# made here: a project binding with a condition on the secret name does the same job.
resource "google_project_iam_member" "user_secret_reader" {
  for_each = toset(local.user_secret_readers)

  project = var.project_id
  role    = "roles/secretmanager.secretAccessor"
  member  = google_service_account.runtime[each.key].member

  condition {
    title       = "prometheus-exchange-keys-only"
    description = "Only secrets named ${var.user_secret_prefix}exchange-keys-*"
    expression  = "resource.name.startsWith(\"${local.exchange_key_name_prefix}\")"
  }
}

# The API stores and deletes exchange keys: add a version, delete the secret, on key
# secrets only; nothing here reads a value, lists, or touches any other secret.
resource "google_project_iam_custom_role" "user_secret_writer" {
  project     = var.project_id
  role_id     = replace("${var.name_prefix}_user_secret_writer", "-", "_")
  title       = "Prometheus exchange-key writer"
  description = "Add versions to and delete exchange-key secrets without reading them."
  permissions = [
    "secretmanager.secrets.delete",
    "secretmanager.versions.add",
  ]
}

resource "google_project_iam_member" "user_secret_writer" {
  for_each = toset(local.user_secret_writers)

  project = var.project_id
  role    = google_project_iam_custom_role.user_secret_writer.name
  member  = google_service_account.runtime[each.key].member

  condition {
    title       = "prometheus-exchange-keys-only"
    description = "Only secrets named ${var.user_secret_prefix}exchange-keys-*"
    expression  = "resource.name.startsWith(\"${local.exchange_key_name_prefix}\")"
  }
}

# Creating a secret is checked on the project (the new secret's name is not visible to
# IAM conditions), so it is a role of its own holding only that permission: it cannot
# read, change or delete any secret.
resource "google_project_iam_custom_role" "user_secret_creator" {
  project     = var.project_id
  role_id     = replace("${var.name_prefix}_user_secret_creator", "-", "_")
  title       = "Prometheus exchange-key creator"
  description = "Create (empty) secrets; values and deletion need the writer role."
  permissions = ["secretmanager.secrets.create"]
}

resource "google_project_iam_member" "user_secret_creator" {
  for_each = toset(local.user_secret_writers)

  project = var.project_id
  role    = google_project_iam_custom_role.user_secret_creator.name
  member  = google_service_account.runtime[each.key].member
}

# Report links (V4 signed URLs): a function has no key file, so it signs through IAM
# signBlob as itself, which needs token creation on its own account only.
resource "google_service_account_iam_member" "url_signer" {
  for_each = toset(local.url_signers)

  service_account_id = google_service_account.runtime[each.key].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_service_account.runtime[each.key].member
}

# --- invokers ------------------------------------------------------------------------
# Gen2 functions are Cloud Run services: run.invoker goes on the service (the
# cloudfunctions2 IAM resources reject that role).

resource "google_cloud_run_v2_service_iam_member" "scheduler_invoker" {
  for_each = local.scheduled_functions

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}

resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  for_each = local.push_functions

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = google_service_account.push.member
}

resource "google_cloud_run_v2_service_iam_member" "api_invoker" {
  for_each = toset(var.api_public ? ["allUsers"] : var.api_invoker_members)

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.fn["api"].name
  role     = "roles/run.invoker"
  member   = each.key
}

# Telegram calls the bot webhook without Google credentials: the function authenticates it
# by the X-Telegram-Bot-Api-Secret-Token header (constant-time compare, docs/notifications.md).
resource "google_cloud_run_v2_service_iam_member" "telegram_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.fn["telegram"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
