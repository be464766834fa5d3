# Provider and Terraform versions, and where the state lives.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 7.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4, < 3.0"
    }
  }

  # State in a Cloud Storage bucket created once by hand (docs/deploy.md, step 3):
  #   terraform init -backend-config="bucket=<PROJECT>-tfstate"
  backend "gcs" {
    prefix = "prometheus"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    app        = "prometheus"
    managed-by = "terraform"
  }
}

data "google_project" "this" {
  project_id = var.project_id
}
