//! One HTTP request and its retries: permits, replica choice, backoff, and the errors that name
//! the URL and the server's message.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::OpenAiModel;
use super::replicas::{parse_retry_after, retry_wait};
use crate::error::excerpt;
use crate::wire::{self};
use crate::{OpenAiError, Result};

/// Longest error body read from a failed request.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Longest line quoted in an error.
pub(super) const MAX_QUOTED: usize = 600;

impl OpenAiModel {
    /// Runs `attempt` on the prompt's replica until it succeeds, retrying transient failures with
    /// backoff (a failing replica rests, so a retry goes to the prompt's next replica when there
    /// is one); `cancel` aborts between attempts. `attempt` gets the replica's API root.
    pub(super) fn with_retries<T>(
        &self,
        affinity: u64,
        cancel: &AtomicBool,
        mut attempt: impl FnMut(usize, &str) -> std::result::Result<T, (OpenAiError, Option<Duration>)>,
    ) -> Result<T> {
        let mut attempts: u32 = 0;
        let mut backoff = self.config.initial_backoff;
        loop {
            attempts += 1;
            let outcome = {
                let _permit = self.permits.acquire_blocking();
                let replica = self.replicas.pick(affinity);
                let outcome = attempt(replica, &self.replicas.list[replica].base_url);
                match &outcome {
                    Ok(_) => self.replicas.succeeded(replica),
                    Err((error, _)) if error.is_transient() => self.replicas.failed(replica),
                    Err(_) => {}
                }
                outcome
            };
            let (error, retry_after) = match outcome {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            if !error.is_transient()
                || attempts > self.config.max_retries
                || cancel.load(Ordering::Relaxed)
            {
                return Err(if attempts > 1 {
                    OpenAiError::GaveUp {
                        attempts,
                        source: Box::new(error),
                    }
                } else {
                    error
                });
            }
            std::thread::sleep(retry_wait(backoff, retry_after));
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// Sends one request; on failure also returns the server's `Retry-After`.
    pub(super) fn send(
        &self,
        url: &str,
        body: &str,
        stream: bool,
    ) -> std::result::Result<ureq::Response, (OpenAiError, Option<Duration>)> {
        let mut http = self.agent.post(url).set("Content-Type", "application/json");
        if stream {
            http = http.set("Accept", "text/event-stream");
        }
        if let Some(key) = &self.config.api_key {
            http = http.set("Authorization", &format!("Bearer {key}"));
        }
        match http.send_string(body) {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(status, response)) => {
                let retry_after = response.header("Retry-After").and_then(parse_retry_after);
                Err((self.status_error(url, status, response), retry_after))
            }
            Err(other) => Err((
                self.request_error(url, other, self.config.connect_timeout),
                None,
            )),
        }
    }

    pub(super) fn status_error(
        &self,
        url: &str,
        status: u16,
        response: ureq::Response,
    ) -> OpenAiError {
        let mut body = String::new();
        // The body is only read for its message; a broken body still leaves the status to report.
        let _ = response
            .into_reader()
            .take(MAX_ERROR_BODY)
            .read_to_string(&mut body);
        let message = excerpt(&wire::error_message(&body), MAX_QUOTED);
        let lower = message.to_lowercase();
        let hint = match status {
            401 | 403 => " (check the API key: OPENAI_API_KEY or the builder's api_key)",
            404 => " (check the base URL, which should end in /v1, and the model name)",
            400 | 422 if lower.contains("logprob") => {
                " (the server may cap top logprobs below the k asked for; start vLLM with --max-logprobs K)"
            }
            _ => "",
        };
        OpenAiError::Status {
            url: url.to_string(),
            status,
            message,
            hint: hint.to_string(),
        }
    }

    pub(super) fn request_error(
        &self,
        url: &str,
        error: ureq::Error,
        timeout: Duration,
    ) -> OpenAiError {
        match error {
            ureq::Error::Status(status, response) => self.status_error(url, status, response),
            ureq::Error::Transport(transport) => {
                let message = transport.to_string();
                let timed_out = std::error::Error::source(&transport)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .is_some_and(|io| {
                        matches!(
                            io.kind(),
                            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                        )
                    });
                if timed_out {
                    OpenAiError::Timeout {
                        url: url.to_string(),
                        after: timeout,
                        message,
                    }
                } else {
                    OpenAiError::Connection {
                        url: url.to_string(),
                        message,
                    }
                }
            }
        }
    }

    pub(super) fn io_error(&self, url: &str, error: &std::io::Error) -> OpenAiError {
        match error.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => OpenAiError::Timeout {
                url: url.to_string(),
                after: self.config.read_timeout,
                message: error.to_string(),
            },
            _ => OpenAiError::Connection {
                url: url.to_string(),
                message: format!("reading the answer failed: {error}"),
            },
        }
    }
}
