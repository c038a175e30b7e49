"""The study: configs into batched trials and tidy records, persisted and spread over workers."""
