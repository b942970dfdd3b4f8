//! A virtual-time harness: drives connections through the broker and sorts its outputs.
#![allow(dead_code)]

pub mod live_model;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use assist_policy::{Decision, DenyReason, Mode, Warning};
use assist_session::message::CloseCode;
use assist_session::{
    AuditEvent, AuditKind, Broker, BrokerConfig, ClientMessage, ClientRequest, ConnId,
    DangerDeterministicCrypto, DeviceInfo, EvaluateRequest, LiveQuery, LiveToken, Output, Party,
    Profile, RecordEvent, RelayAccess, RequestId, ServerEvent, SessionId, Timestamp,
};
pub use live_model::LiveModel;

/// The broker, a fake clock, and everything it said, sorted by destination.
pub struct World {
    pub broker: Broker,
    pub now: Timestamp,
    pub inbox: HashMap<ConnId, VecDeque<ServerEvent>>,
    pub evaluations: VecDeque<EvaluateRequest>,
    pub ticket_requests: VecDeque<(SessionId, Mode, bool)>,
    pub relay: Vec<Output>,
    pub records: Vec<RecordEvent>,
    pub audits: Vec<AuditEvent>,
    /// Users whose redemptions failed ([`Output::RedemptionFailed`]), for peers to hear.
    pub failed_redemptions: Vec<assist_session::UserRef>,
    pub closed: Vec<(ConnId, CloseCode)>,
    /// The live state the broker's ops and queries go to.
    pub live: LiveModel,
    /// While set, queries wait in `held` instead of being answered at once.
    pub hold_live: bool,
    pub held: VecDeque<(LiveToken, LiveQuery)>,
    next_conn: u64,
    next_request: u64,
}

impl World {
    pub fn new() -> Self {
        World::with_config(BrokerConfig::default())
    }

    pub fn with_config(config: BrokerConfig) -> Self {
        let broker =
            Broker::new(config, Box::new(DangerDeterministicCrypto::new(7))).expect("valid config");
        World::with_broker(broker)
    }

    pub fn with_broker(broker: Broker) -> Self {
        World {
            broker,
            now: Timestamp::from_millis(1_700_000_000_000),
            inbox: HashMap::new(),
            evaluations: VecDeque::new(),
            ticket_requests: VecDeque::new(),
            relay: Vec::new(),
            records: Vec::new(),
            audits: Vec::new(),
            failed_redemptions: Vec::new(),
            closed: Vec::new(),
            live: LiveModel::default(),
            hold_live: false,
            held: VecDeque::new(),
            next_conn: 0,
            next_request: 0,
        }
    }

    /// Drains the broker's outputs into the buckets.
    pub fn pump(&mut self) {
        while let Some(out) = self.broker.poll_output() {
            match out {
                Output::Send { conn, event } => {
                    self.inbox.entry(conn).or_default().push_back(event)
                }
                Output::Close { conn, code } => self.closed.push((conn, code)),
                Output::Evaluate(e) => self.evaluations.push_back(e),
                Output::IssueTickets {
                    session_id,
                    mode,
                    chat,
                } => self.ticket_requests.push_back((session_id, mode, chat)),
                out @ (Output::RelaySetMode { .. } | Output::RelayEnd { .. }) => {
                    self.relay.push(out)
                }
                Output::Record(r) => self.records.push(r),
                Output::Audit(a) => self.audits.push(a),
                Output::RedemptionFailed { user } => self.failed_redemptions.push(user),
                Output::Live(op) => self.live.apply(op),
                Output::LiveQuery { token, query } if self.hold_live => {
                    self.held.push_back((token, query))
                }
                Output::LiveQuery { token, query } => {
                    let answer = self.live.query(query);
                    self.broker
                        .handle_live_answer(token, answer, self.now)
                        .expect("a query out");
                }
            }
        }
    }

    /// Answers the held query at `index` (in the order they were asked) against the model.
    pub fn answer_held(&mut self, index: usize) {
        let (token, query) = self.held.remove(index).expect("a held query");
        let answer = self.live.query(query);
        self.broker
            .handle_live_answer(token, answer, self.now)
            .expect("a query out");
        self.pump();
    }

    /// Moves the clock and fires due deadlines.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
        self.broker.handle_timeout(self.now);
        self.pump();
    }

    pub fn connect(&mut self, party: Party) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.broker
            .handle_connect(conn, party, self.now)
            .expect("fresh connection");
        self.pump();
        conn
    }

    pub fn disconnect(&mut self, conn: ConnId) {
        self.broker.handle_disconnect(conn, self.now);
        self.pump();
    }

    /// Sends a request; returns its id.
    pub fn send(&mut self, conn: ConnId, request: ClientRequest) -> RequestId {
        self.next_request += 1;
        let id = RequestId::Number(self.next_request);
        self.broker
            .handle_message(
                conn,
                ClientMessage {
                    id: id.clone(),
                    request,
                },
                self.now,
            )
            .expect("open connection");
        self.pump();
        id
    }

    pub fn send_text(&mut self, conn: ConnId, text: &str) {
        self.broker
            .handle_text(conn, text, self.now)
            .expect("open connection");
        self.pump();
    }

    pub fn recv(&mut self, conn: ConnId) -> Option<ServerEvent> {
        self.inbox.get_mut(&conn).and_then(VecDeque::pop_front)
    }

    /// The next event for `conn`, which must exist.
    pub fn expect(&mut self, conn: ConnId) -> ServerEvent {
        self.recv(conn)
            .unwrap_or_else(|| panic!("no event for {conn:?}"))
    }

    pub fn drain(&mut self, conn: ConnId) -> Vec<ServerEvent> {
        self.inbox
            .get_mut(&conn)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    pub fn assert_silent(&mut self, conn: ConnId) {
        let events = self.drain(conn);
        assert!(
            events.is_empty(),
            "unexpected events for {conn:?}: {events:?}"
        );
    }

    /// Answers the oldest pending evaluation.
    pub fn decide(&mut self, decision: Decision) -> EvaluateRequest {
        let eval = self
            .evaluations
            .pop_front()
            .expect("an evaluation is pending");
        self.broker
            .handle_decision(eval.eval, decision, self.now)
            .expect("decision accepted");
        self.pump();
        eval
    }

    /// Answers the oldest ticket request.
    pub fn issue_tickets(&mut self) -> SessionId {
        let (sid, _, _) = self.ticket_requests.pop_front().expect("tickets requested");
        self.broker
            .handle_tickets(
                &sid,
                access("helper", &sid),
                access("sharer", &sid),
                self.now,
            )
            .expect("tickets accepted");
        self.pump();
        sid
    }

    pub fn audit_kinds(&self) -> Vec<AuditKind> {
        self.audits.iter().map(|a| a.kind.clone()).collect()
    }

    pub fn record_ends(&self, sid: &SessionId) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r, RecordEvent::Ended { session_id, .. } if session_id == sid))
            .count()
    }

    // ------------------------------------------------------------- flows

    /// Helper asks for a code; returns (session, code).
    pub fn request_code(&mut self, helper: ConnId) -> (SessionId, String) {
        let id = self.send(helper, ClientRequest::RequestCode);
        match self.expect(helper) {
            ServerEvent::CodeIssued {
                id: answered,
                session_id,
                code,
                ..
            } => {
                assert_eq!(answered, id);
                (session_id, code)
            }
            other => panic!("expected codeIssued, got {other:?}"),
        }
    }

    pub fn redeem(&mut self, sharer: ConnId, code: &str) -> ServerEvent {
        self.send(
            sharer,
            ClientRequest::RedeemCode {
                code: code.to_owned(),
            },
        );
        self.expect(sharer)
    }

    /// A helper and a sharer of tenant `t1`, paired by code.
    pub fn pair(&mut self) -> Pair {
        let helper = self.connect(user("t1", "helen"));
        let sharer = self.connect(device_user("t1", "sam", "dev-1", true));
        self.pair_conns(helper, sharer)
    }

    pub fn pair_conns(&mut self, helper: ConnId, sharer: ConnId) -> Pair {
        let (session, code) = self.request_code(helper);
        let joined = self.redeem(sharer, &code);
        assert!(
            matches!(joined, ServerEvent::SessionJoined { .. }),
            "{joined:?}"
        );
        let joined = self.expect(helper);
        assert!(
            matches!(joined, ServerEvent::SessionJoined { .. }),
            "{joined:?}"
        );
        Pair {
            helper,
            sharer,
            session,
        }
    }

    pub fn request_mode(&mut self, p: &Pair, mode: Mode, ack: &[Warning]) -> RequestId {
        self.send(
            p.helper,
            ClientRequest::RequestMode {
                session_id: p.session.clone(),
                mode,
                acknowledge_warnings: ack.to_vec(),
            },
        )
    }

    pub fn consent(&mut self, p: &Pair, allow: bool) {
        let id = self.send(
            p.sharer,
            ClientRequest::Consent {
                session_id: p.session.clone(),
                allow,
            },
        );
        assert_eq!(self.expect(p.sharer), ServerEvent::Ack { id });
    }

    /// The helper asks for `mode`, the policy allows it, the sharer is asked and allows.
    pub fn ask_and_allow(&mut self, p: &Pair, mode: Mode) {
        self.request_mode(p, mode, &[]);
        self.decide(allow(mode));
        assert!(matches!(
            self.expect(p.helper),
            ServerEvent::ModeRequested { .. }
        ));
        assert!(matches!(
            self.expect(p.sharer),
            ServerEvent::ConsentRequested { .. }
        ));
        self.consent(p, true);
    }

    /// Paired → active in `mode` with consent.
    pub fn activate(&mut self, p: &Pair, mode: Mode) {
        self.ask_and_allow(p, mode);
        self.issue_tickets();
        assert!(matches!(
            self.expect(p.helper),
            ServerEvent::SessionActive { .. }
        ));
        assert!(matches!(
            self.expect(p.sharer),
            ServerEvent::SessionActive { .. }
        ));
    }
}

impl World {
    /// Active → `mode` (an upgrade) with consent.
    pub fn activate_upgrade(&mut self, p: &Pair, mode: Mode) {
        self.ask_and_allow(p, mode);
        for conn in [p.helper, p.sharer] {
            let changed = self.expect(conn);
            assert!(
                matches!(changed, ServerEvent::ModeChanged { mode: m, .. } if m == mode),
                "{changed:?}"
            );
        }
    }
}

/// A helper connection, a sharer connection and their session.
#[derive(Debug, Clone)]
pub struct Pair {
    pub helper: ConnId,
    pub sharer: ConnId,
    pub session: SessionId,
}

pub fn access(role: &str, sid: &SessionId) -> RelayAccess {
    RelayAccess {
        ticket: format!("ticket-{role}-{sid}"),
        address: "relay.example:443".into(),
        wss_url: "wss://relay.example:443/v1/relay".into(),
        quic_addr: Some("relay.example:443".into()),
    }
}

pub fn profile(name: &str) -> Profile {
    Profile {
        display_name: name.to_owned(),
        job_title: Some("Engineer".into()),
        company_name: Some("Contoso".into()),
        verified_domain: Some("contoso.com".into()),
    }
}

pub fn user(tenant: &str, name: &str) -> Party {
    Party {
        tenant_id: tenant.to_owned(),
        user_id: Some(format!("{name}-id")),
        user_principal_name: Some(format!("{name}@contoso.com")),
        given_name: Some(name.to_owned()),
        family_name: Some("Doe".into()),
        profile: profile(name),
        device: None,
    }
}

pub fn device(id: &str, enrolled: bool) -> DeviceInfo {
    DeviceInfo {
        id: id.to_owned(),
        display_name: Some(format!("{id}-name")),
        operating_system: Some("Windows".into()),
        enrolled,
    }
}

pub fn device_user(tenant: &str, name: &str, device_id: &str, enrolled: bool) -> Party {
    Party {
        device: Some(device(device_id, enrolled)),
        ..user(tenant, name)
    }
}

/// A device token: no user signed in.
pub fn device_token(tenant: &str, device_id: &str) -> Party {
    Party {
        tenant_id: tenant.to_owned(),
        user_id: None,
        user_principal_name: None,
        given_name: None,
        family_name: None,
        profile: Profile {
            display_name: format!("{device_id}-name"),
            ..Profile::default()
        },
        device: Some(device(device_id, true)),
    }
}

pub fn allow(mode: Mode) -> Decision {
    allow_with(mode, &[], true)
}

pub fn allow_with(mode: Mode, warnings: &[Warning], chat_allowed: bool) -> Decision {
    Decision::Allow {
        granted: mode.with_implied(),
        warnings: warnings.to_vec(),
        chat_allowed,
        matched_assignment_ids: BTreeSet::from(["a1".to_owned()]),
    }
}

pub fn deny(reason: DenyReason) -> Decision {
    Decision::Deny { reason }
}

pub fn error_code(event: &ServerEvent) -> Option<&'static str> {
    match event {
        ServerEvent::Error { code, .. } => Some(code.as_str()),
        _ => None,
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
