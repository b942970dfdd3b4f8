//! The machine's knobs, with the documented defaults.

use std::time::Duration;

/// A failed-attempt limit: after `max_failures` failures within `window`, refuse for `lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    /// Failures allowed within `window`; the one that reaches it starts the lock.
    pub max_failures: u32,
    /// The sliding window failures are counted in.
    pub window: Duration,
    /// How long every attempt is refused (`rateLimited`) once locked.
    pub lock: Duration,
}

/// A per-connection token bucket for requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRate {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Burst size: requests allowed at once from a full bucket.
    pub burst: u32,
}

/// Configuration of a [`crate::Broker`]. `Default` gives the documented values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// How long a security code can be redeemed. Default 10 minutes.
    pub code_ttl: Duration,
    /// How long after expiry a code still answers `codeExpired` (rather than `invalidCode`).
    /// Default 10 minutes.
    pub expired_code_memory: Duration,
    /// How long the sharer has to allow or decline. Default 5 minutes.
    pub consent_timeout: Duration,
    /// How long a present sharer may decline an unattended session before it starts. Default 30 s.
    pub unattended_decline_window: Duration,
    /// How long a launch request waits for a device connection to answer. Default 5 minutes.
    pub launch_timeout: Duration,
    /// How long a joined session may wait for its first granted mode (helper asking, policy,
    /// warnings, consent included) before it ends with `joinTimedOut`. Default 15 minutes.
    pub join_timeout: Duration,
    /// How long the IO layer has to answer an `Evaluate`; then the helper gets `unavailable`.
    /// Default 10 s.
    pub decision_timeout: Duration,
    /// How long the IO layer has to answer `IssueTickets`; then the session ends with
    /// `relayUnavailable`. Default 10 s.
    pub ticket_timeout: Duration,
    /// Failed code redemptions per user (tenant + user id). Default 5 per minute, then a
    /// 5-minute lock.
    pub user_redeem_limit: FailureLimit,
    /// Failed code redemptions per tenant (all its users together). Default 50 per minute,
    /// then a 1-minute lock for the whole tenant.
    pub tenant_redeem_limit: FailureLimit,
    /// Requests per connection. Default 10 per second with bursts of 20; requests over it
    /// get `rateLimited` and are not processed.
    pub request_rate: RequestRate,
    /// Abuse strikes (a rate-limited request, or a message that is too large, malformed or of
    /// unknown type) tolerated within `abuse_window`; the one that reaches it closes the
    /// connection with 4429. Default 10.
    pub abuse_strikes: u32,
    /// The window abuse strikes are counted in. Default 60 s.
    pub abuse_window: Duration,
    /// How often an active session's record is marked as still running
    /// ([`crate::RecordEvent::Seen`]); a crash loses at most this much of its duration.
    /// Default 60 s.
    pub seen_interval: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            code_ttl: Duration::from_secs(10 * 60),
            expired_code_memory: Duration::from_secs(10 * 60),
            consent_timeout: Duration::from_secs(5 * 60),
            unattended_decline_window: Duration::from_secs(30),
            launch_timeout: Duration::from_secs(5 * 60),
            join_timeout: Duration::from_secs(15 * 60),
            decision_timeout: Duration::from_secs(10),
            ticket_timeout: Duration::from_secs(10),
            user_redeem_limit: FailureLimit {
                max_failures: 5,
                window: Duration::from_secs(60),
                lock: Duration::from_secs(5 * 60),
            },
            tenant_redeem_limit: FailureLimit {
                max_failures: 50,
                window: Duration::from_secs(60),
                lock: Duration::from_secs(60),
            },
            request_rate: RequestRate {
                per_second: 10,
                burst: 20,
            },
            abuse_strikes: 10,
            abuse_window: Duration::from_secs(60),
            seen_interval: Duration::from_secs(60),
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Operator's fault: a duration that must be positive is zero.
    #[error("`{0}` must be greater than zero")]
    ZeroDuration(&'static str),
    /// Operator's fault: a count that must be positive is zero.
    #[error("`{0}` must be greater than zero")]
    ZeroCount(&'static str),
}

impl BrokerConfig {
    /// Checks the values; [`crate::Broker::new`] calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let durations = [
            ("code_ttl", self.code_ttl),
            ("consent_timeout", self.consent_timeout),
            ("launch_timeout", self.launch_timeout),
            ("join_timeout", self.join_timeout),
            ("decision_timeout", self.decision_timeout),
            ("ticket_timeout", self.ticket_timeout),
            ("user_redeem_limit.window", self.user_redeem_limit.window),
            (
                "tenant_redeem_limit.window",
                self.tenant_redeem_limit.window,
            ),
            ("abuse_window", self.abuse_window),
            ("seen_interval", self.seen_interval),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::ZeroDuration(name));
        }
        let counts = [
            (
                "user_redeem_limit.max_failures",
                self.user_redeem_limit.max_failures,
            ),
            (
                "tenant_redeem_limit.max_failures",
                self.tenant_redeem_limit.max_failures,
            ),
            ("request_rate.per_second", self.request_rate.per_second),
            ("request_rate.burst", self.request_rate.burst),
            ("abuse_strikes", self.abuse_strikes),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(ConfigError::ZeroCount(name));
        }
        Ok(())
    }
}
