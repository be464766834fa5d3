# Secret Manager. Terraform creates the secret containers and their per-secret IAM
# (iam.tf); values are added by hand (docs/deploy.md) and never appear here or in state.
# Per-user exchange keys are secrets named "<user_secret_prefix>exchange-keys-<exchange>-
# <env>-<user>", created by the API at run time and readable only by the executor and the
# worker. API tokens are not secrets here: the API stores only their SHA-256 (docs/api.md).

locals {
  static_secrets = {
    sendgrid-api-key    = "SendGrid API key for email notifications and daily summaries."
    telegram-bot-token  = "Telegram bot token (optional notifications)."
    webhook-signing-key = "Default HMAC-SHA256 key for signed webhooks."
    telegram-hook-token = "Secret token given to Telegram's setWebhook; the telegram function checks it."
  }
}

resource "google_secret_manager_secret" "static" {
  for_each = local.static_secrets

  project   = var.project_id
  secret_id = "${var.name_prefix}-${each.key}"
  labels = {
    purpose = each.key
  }
  annotations = {
    description = each.value
  }

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }

  depends_on = [google_project_service.apis]
}
