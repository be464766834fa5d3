# Topics (names from prometheus_trader.usecases.names.Topics), each with a dead-letter
# topic "<topic>-dead-letter" and a pull subscription on it that keeps dead letters for
# inspection and replay ("<topic>-dead-letter-keep"). Consumers are our own push
# subscriptions "<topic>.<subscription>" (the id form of adapters.gcp.envelopes, with
# names.Subscriptions) to the function URLs, with an OIDC token, an ack deadline matching
# the function timeout, exponential retry and the dead-letter policy. No Eventarc
# trigger: its auto-created subscription cannot get a dead-letter topic or ack deadline.

locals {
  topics = toset(["signals", "executions", "events"])
}

resource "google_pubsub_topic" "topic" {
  for_each = local.topics

  project = var.project_id
  name    = each.key

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  for_each = local.topics

  project = var.project_id
  name    = "${each.key}-dead-letter"

  depends_on = [google_project_service.apis]
}

# Without a subscription a dead-letter topic drops what it receives.
resource "google_pubsub_subscription" "dead_letter_keep" {
  for_each = local.topics

  project                    = var.project_id
  name                       = "${each.key}-dead-letter-keep"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  ack_deadline_seconds       = 60
  message_retention_duration = var.message_retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = "" # never expires
  }
}

resource "google_pubsub_subscription" "push" {
  for_each = local.push_functions

  project                      = var.project_id
  name                         = "${each.value.topic}.${each.value.subscription}"
  topic                        = google_pubsub_topic.topic[each.value.topic].id
  ack_deadline_seconds         = max(10, min(600, var.function_settings[each.key].timeout_seconds))
  message_retention_duration   = var.message_retention
  enable_message_ordering      = each.value.ordered
  enable_exactly_once_delivery = false

  push_config {
    push_endpoint = google_cloudfunctions2_function.fn[each.key].service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = google_cloudfunctions2_function.fn[each.key].service_config[0].uri
    }

    attributes = {
      x-goog-version = "v1"
    }
  }

  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.value.topic].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = "" # never expires
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.push_invoker,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}
