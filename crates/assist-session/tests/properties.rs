//! Property tests: random interleavings of client requests, IO-layer answers and time steps.
//! Invariants: never a panic; never an active session (or a raised mode) without a prior
//! Allow for that mode and, unless unattended, the sharer's consent; every recorded session
//! ends exactly once; codes are single use; every request gets at most one answer (and
//! exactly one at once, except `requestMode`, which is answered after the decision).
//! With live-state answers delayed and reordered: once every answer is in, no pending code
//! is left without its session and no session waits for a redemption without its code.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};

use assist_policy::{Decision, DenyReason, Mode, Warning};
use assist_session::code::normalize_code;
use assist_session::message::ClientRequest;
use assist_session::{
    Broker, BrokerConfig, ClientMessage, ConnId, DangerDeterministicCrypto, DeviceInfo, EvalId,
    LiveQuery, LiveToken, Output, Party, Profile, RecordEvent, RelayAccess, RequestId, Role,
    ServerEvent, SessionId, SessionState, Timestamp,
};
use common::LiveModel;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;

const DEVICES: [&str; 3] = ["dev-1", "dev-2", "dev-3"];

fn parties() -> Vec<Party> {
    let user = |tenant: &str, name: &str, device: Option<&str>| Party {
        tenant_id: tenant.into(),
        user_id: Some(format!("{name}-id")),
        user_principal_name: Some(format!("{name}@x.test")),
        given_name: None,
        family_name: None,
        profile: Profile {
            display_name: name.into(),
            ..Profile::default()
        },
        device: device.map(|id| DeviceInfo {
            id: id.into(),
            display_name: None,
            operating_system: None,
            enrolled: true,
        }),
    };
    vec![
        user("t1", "h1", None),
        user("t1", "h2", None),
        user("t1", "s1", Some("dev-1")),
        user("t1", "s2", Some("dev-1")),
        Party {
            user_id: None,
            ..user("t1", "agent", Some("dev-2"))
        },
        user("t2", "x", Some("dev-1")),
        user("t1", "s3", None),
    ]
}

#[derive(Debug, Clone)]
enum Req {
    Ping,
    RequestCode,
    Redeem {
        known: Option<Index>,
        garbage: bool,
    },
    RequestSession {
        device: usize,
        mode: Option<Mode>,
    },
    AnswerLaunch {
        session: Index,
        accept: bool,
    },
    RequestMode {
        session: Index,
        mode: Mode,
        ack: bool,
    },
    Consent {
        session: Index,
        allow: bool,
    },
    Chat {
        session: Index,
    },
    End {
        session: Index,
    },
}

#[derive(Debug, Clone)]
enum Op {
    Connect(usize),
    Disconnect(Index),
    Request(Index, Req),
    Text(Index, String),
    Decide(Index, Option<(Mode, Vec<Warning>, bool)>, usize),
    Tickets(Index, bool),
    Advance(u64),
    Settings(usize, bool, bool),
    AdminLaunch(usize, usize),
    /// Take the natural next step of a known session (so that random runs get far).
    Nudge(Index, Mode, Index),
    /// Answer one of the held live-state queries (any of them: answers come reordered).
    AnswerLive(Index),
}

fn mode() -> impl Strategy<Value = Mode> {
    prop::sample::select(Mode::ALL.to_vec())
}

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        1 => Just(Req::Ping),
        3 => Just(Req::RequestCode),
        3 => (prop::option::of(any::<Index>()), any::<bool>())
            .prop_map(|(known, garbage)| Req::Redeem { known, garbage }),
        2 => (0..DEVICES.len(), prop::option::of(mode()))
            .prop_map(|(device, mode)| Req::RequestSession { device, mode }),
        2 => (any::<Index>(), any::<bool>())
            .prop_map(|(session, accept)| Req::AnswerLaunch { session, accept }),
        4 => (any::<Index>(), mode(), any::<bool>())
            .prop_map(|(session, mode, ack)| Req::RequestMode { session, mode, ack }),
        4 => (any::<Index>(), any::<bool>())
            .prop_map(|(session, allow)| Req::Consent { session, allow }),
        1 => any::<Index>().prop_map(|session| Req::Chat { session }),
        1 => any::<Index>().prop_map(|session| Req::End { session }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let warnings = prop::sample::subsequence(Warning::ALL.to_vec(), 0..=2);
    prop_oneof![
        3 => (0..7usize).prop_map(Op::Connect),
        1 => any::<Index>().prop_map(Op::Disconnect),
        12 => (any::<Index>(), req()).prop_map(|(c, r)| Op::Request(c, r)),
        1 => (any::<Index>(), "[ -~]{0,40}").prop_map(|(c, t)| Op::Text(c, t)),
        5 => (any::<Index>(), prop::option::of((mode(), warnings, any::<bool>())), 0..7usize)
            .prop_map(|(e, allow, reason)| Op::Decide(e, allow, reason)),
        3 => (any::<Index>(), any::<bool>()).prop_map(|(s, fail)| Op::Tickets(s, fail)),
        3 => prop::sample::select(vec![1u64, 1_000, 1_000, 10_000, 30_000, 300_000, 600_000])
            .prop_map(Op::Advance),
        1 => (0..2usize, any::<bool>(), any::<bool>()).prop_map(|(t, b, e)| Op::Settings(t, b, e)),
        1 => (0..7usize, 0..DEVICES.len()).prop_map(|(p, d)| Op::AdminLaunch(p, d)),
        20 => (any::<Index>(), mode(), any::<Index>()).prop_map(|(s, m, c)| Op::Nudge(s, m, c)),
    ]
}

/// `op()`, plus answers to held live-state queries.
fn op_delayed() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => op(),
        3 => any::<Index>().prop_map(Op::AnswerLive),
    ]
}

/// The simulation and its oracle.
struct Sim {
    broker: Broker,
    live: LiveModel,
    /// Hold live-state queries until an `AnswerLive` op answers them.
    delay_live: bool,
    held: Vec<(LiveToken, LiveQuery)>,
    now: Timestamp,
    parties: Vec<Party>,
    conns: Vec<ConnId>,
    next_conn: u64,
    next_id: u64,
    sessions: Vec<SessionId>,
    codes: Vec<String>,
    evals: Vec<(EvalId, SessionId, Mode)>,
    tickets: Vec<SessionId>,
    /// (session, mode) pairs some Allow decision granted.
    allowed: HashSet<(SessionId, Mode)>,
    consents: HashMap<SessionId, u32>,
    consents_used: HashMap<SessionId, u32>,
    current: HashMap<SessionId, Mode>,
    issued: HashSet<(SessionId, Mode)>,
    started: HashSet<SessionId>,
    ended: HashMap<SessionId, u32>,
    redeemed: HashMap<String, u32>,
    answers: HashMap<RequestId, u32>,
    decided: HashSet<EvalId>,
    helper_of: HashMap<SessionId, ConnId>,
    sharer_of: HashMap<SessionId, ConnId>,
    code_of: HashMap<SessionId, String>,
    consent_asked: HashSet<SessionId>,
    raised: u32,
    party_of: HashMap<ConnId, usize>,
    /// The `consent {allow: true}` request being handled (its `ack` counts as consent).
    consent_in_flight: Option<(RequestId, SessionId)>,
}

impl Sim {
    fn new() -> Self {
        Sim {
            broker: Broker::new(
                BrokerConfig::default(),
                Box::new(DangerDeterministicCrypto::new(3)),
            )
            .unwrap(),
            live: LiveModel::default(),
            delay_live: false,
            held: Vec::new(),
            now: Timestamp::from_millis(1_000_000),
            parties: parties(),
            conns: Vec::new(),
            next_conn: 0,
            next_id: 0,
            sessions: Vec::new(),
            codes: Vec::new(),
            evals: Vec::new(),
            tickets: Vec::new(),
            allowed: HashSet::new(),
            consents: HashMap::new(),
            consents_used: HashMap::new(),
            current: HashMap::new(),
            issued: HashSet::new(),
            started: HashSet::new(),
            ended: HashMap::new(),
            redeemed: HashMap::new(),
            answers: HashMap::new(),
            decided: HashSet::new(),
            helper_of: HashMap::new(),
            sharer_of: HashMap::new(),
            code_of: HashMap::new(),
            consent_asked: HashSet::new(),
            raised: 0,
            party_of: HashMap::new(),
            consent_in_flight: None,
        }
    }

    fn pick<T: Clone>(list: &[T], i: &Index) -> Option<T> {
        (!list.is_empty()).then(|| list[i.index(list.len())].clone())
    }

    fn learn_session(&mut self, sid: &SessionId) {
        if !self.sessions.contains(sid) {
            self.sessions.push(sid.clone());
        }
    }

    /// Drains outputs, checks invariants; returns the events sent as answers to `id`.
    fn pump(
        &mut self,
        id: Option<&RequestId>,
    ) -> Result<Vec<(ConnId, ServerEvent)>, TestCaseError> {
        let mut answers = Vec::new();
        while let Some(out) = self.broker.poll_output() {
            match out {
                Output::Send { conn, event } => {
                    prop_assert!(self.conns.contains(&conn), "sent to a closed connection");
                    match &event {
                        ServerEvent::CodeIssued {
                            session_id, code, ..
                        } => {
                            self.learn_session(session_id);
                            self.codes.push(code.clone());
                            self.code_of.insert(session_id.clone(), code.clone());
                            self.helper_of.insert(session_id.clone(), conn);
                        }
                        ServerEvent::LaunchPending { session_id, .. } => {
                            self.learn_session(session_id);
                            self.helper_of.insert(session_id.clone(), conn);
                        }
                        ServerEvent::LaunchRequested { session_id, .. } => {
                            self.learn_session(session_id);
                        }
                        ServerEvent::SessionJoined {
                            session_id, role, ..
                        } => {
                            let map = match role {
                                Role::Helper => &mut self.helper_of,
                                Role::Sharer => &mut self.sharer_of,
                            };
                            map.insert(session_id.clone(), conn);
                            self.code_of.remove(session_id);
                        }
                        ServerEvent::ConsentRequested { session_id, .. }
                        | ServerEvent::UnattendedStarting { session_id, .. } => {
                            self.consent_asked.insert(session_id.clone());
                        }
                        _ => {}
                    }
                    if let Some(answered) = event.answer_id() {
                        let n = self.answers.entry(answered.clone()).or_default();
                        *n += 1;
                        prop_assert!(*n <= 1, "request {answered:?} answered twice");
                        if let (Some((cid, sid)), ServerEvent::Ack { .. }) =
                            (&self.consent_in_flight, &event)
                        {
                            if cid == answered {
                                *self.consents.entry(sid.clone()).or_default() += 1;
                            }
                        }
                        if Some(answered) == id {
                            answers.push((conn, event.clone()));
                        }
                    }
                }
                Output::Close { conn, .. } => {
                    self.conns.retain(|c| *c != conn);
                }
                Output::Evaluate(e) => {
                    self.learn_session(&e.session_id);
                    self.evals.push((e.eval, e.session_id, e.mode));
                }
                Output::IssueTickets {
                    session_id, mode, ..
                } => {
                    self.check_grant(&session_id, mode)?;
                    self.issued.insert((session_id.clone(), mode));
                    self.tickets.push(session_id);
                }
                Output::RelaySetMode {
                    session_id, mode, ..
                } => {
                    let current = self.current.get(&session_id).copied();
                    prop_assert!(
                        current.is_some(),
                        "relay told of a session that never started"
                    );
                    if current.is_some_and(|c| mode > c) {
                        self.raised += 1;
                        self.check_grant(&session_id, mode)?;
                    }
                    self.current.insert(session_id, mode);
                }
                Output::RelayEnd { .. } => {}
                Output::Record(RecordEvent::Started {
                    session_id, mode, ..
                }) => {
                    prop_assert!(self.issued.contains(&(session_id.clone(), mode)));
                    prop_assert!(self.started.insert(session_id.clone()), "started twice");
                    self.current.insert(session_id, mode);
                }
                Output::Record(RecordEvent::Ended { session_id, .. }) => {
                    prop_assert!(
                        self.started.contains(&session_id),
                        "ended but never started"
                    );
                    let n = self.ended.entry(session_id).or_default();
                    *n += 1;
                    prop_assert_eq!(*n, 1, "a session ended twice");
                }
                Output::Record(_) | Output::Audit(_) | Output::RedemptionFailed { .. } => {}
                Output::Live(op) => self.live.apply(op),
                Output::LiveQuery { token, query } if self.delay_live => {
                    self.held.push((token, query))
                }
                Output::LiveQuery { token, query } => {
                    let answer = self.live.query(query);
                    prop_assert!(self
                        .broker
                        .handle_live_answer(token, answer, self.now)
                        .is_ok());
                }
            }
        }
        self.check_counts()?;
        Ok(answers)
    }

    /// The counts the broker keeps as sessions change equal a recount of its sessions, by
    /// their snapshots (pending: waiting for a redemption or a launch answer; active: a mode in
    /// force, by that mode; joined: the rest).
    fn check_counts(&self) -> Result<(), TestCaseError> {
        let counts = self.broker.session_counts();
        let (mut pending, mut joined, mut active) = (0, 0, [0usize; Mode::ALL.len()]);
        for info in self
            .sessions
            .iter()
            .filter_map(|sid| self.broker.session(sid))
        {
            match (info.state, info.mode) {
                (_, Some(mode)) => active[Mode::ALL.iter().position(|m| *m == mode).unwrap()] += 1,
                (SessionState::AwaitingRedemption | SessionState::AwaitingSharer, None) => {
                    pending += 1
                }
                (_, None) => joined += 1,
            }
        }
        prop_assert_eq!(
            counts.total(),
            self.broker.session_count(),
            "counts lost a session"
        );
        prop_assert_eq!(
            (counts.pending, counts.joined, counts.active),
            (pending, joined, active),
            "counts differ from a recount"
        );
        Ok(())
    }

    /// With no live-state query out: every pending code's session waits for its redemption,
    /// and every session waiting for one has its code.
    fn check_live_consistent(&self) -> Result<(), TestCaseError> {
        if !self.held.is_empty() || self.broker.live_queries_out() > 0 {
            return Ok(());
        }
        let pending = self.live.pending_sessions();
        for sid in &pending {
            prop_assert_eq!(
                self.broker.session(sid).map(|s| s.state),
                Some(SessionState::AwaitingRedemption),
                "a pending code without its session"
            );
        }
        for sid in &self.sessions {
            if self.broker.session(sid).map(|s| s.state) == Some(SessionState::AwaitingRedemption) {
                prop_assert!(pending.contains(sid), "a session without its code");
            }
        }
        let listed: BTreeSet<&SessionId> = self.live.sessions.keys().collect();
        for sid in &listed {
            prop_assert!(
                self.broker.session(sid).is_some(),
                "an ended session still listed"
            );
        }
        prop_assert_eq!(listed.len(), self.broker.session_count());
        Ok(())
    }

    /// Answers held query `i` against the model.
    fn answer_live(&mut self, i: usize) -> Result<(), TestCaseError> {
        let (token, query) = self.held.remove(i);
        let answer = self.live.query(query);
        prop_assert!(self
            .broker
            .handle_live_answer(token, answer, self.now)
            .is_ok());
        self.pump(None)?;
        Ok(())
    }

    /// A grant of `mode` needs an Allow for it and, unless unattended, a fresh consent.
    fn check_grant(&mut self, sid: &SessionId, mode: Mode) -> Result<(), TestCaseError> {
        prop_assert!(
            self.allowed.contains(&(sid.clone(), mode)),
            "granted {mode:?} without an Allow"
        );
        let given = self.consents.get(sid).copied().unwrap_or(0);
        let used = self.consents_used.get(sid).copied().unwrap_or(0);
        if mode != Mode::Unattended {
            prop_assert!(given > used, "granted {mode:?} without consent");
        }
        self.consents_used.insert(sid.clone(), given);
        Ok(())
    }

    fn run(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Connect(p) => {
                self.next_conn += 1;
                let conn = ConnId(self.next_conn);
                self.conns.push(conn);
                self.party_of.insert(conn, p);
                prop_assert!(self
                    .broker
                    .handle_connect(conn, self.parties[p].clone(), self.now)
                    .is_ok());
                self.pump(None)?;
            }
            Op::Disconnect(i) => {
                if let Some(conn) = Self::pick(&self.conns, &i) {
                    self.broker.handle_disconnect(conn, self.now);
                    self.conns.retain(|c| *c != conn);
                    self.pump(None)?;
                }
            }
            Op::Request(i, req) => {
                let Some(conn) = Self::pick(&self.conns, &i) else {
                    return Ok(());
                };
                self.request(conn, req)?;
            }
            Op::Text(i, text) => {
                let Some(conn) = Self::pick(&self.conns, &i) else {
                    return Ok(());
                };
                let _ = self.broker.handle_text(conn, &text, self.now);
                self.pump(None)?;
            }
            Op::Decide(i, allow, reason) => {
                let Some((eval, sid, mode)) = Self::pick(&self.evals, &i) else {
                    return Ok(());
                };
                let decision = match allow {
                    Some((granted, warnings, chat_allowed)) => {
                        if granted.implies(mode) {
                            self.allowed.insert((sid, mode));
                        }
                        Decision::Allow {
                            granted: granted.with_implied(),
                            warnings,
                            chat_allowed,
                            matched_assignment_ids: BTreeSet::new(),
                        }
                    }
                    None => Decision::Deny {
                        reason: DenyReason::ALL[reason],
                    },
                };
                self.decided.insert(eval);
                let _ = self.broker.handle_decision(eval, decision, self.now);
                self.pump(None)?;
            }
            Op::Tickets(i, fail) => {
                let Some(sid) = Self::pick(&self.tickets, &i) else {
                    return Ok(());
                };
                let access = |role: &str| RelayAccess {
                    ticket: role.into(),
                    address: "r:1".into(),
                    wss_url: "wss://r:1/v1/relay".into(),
                    quic_addr: None,
                };
                let _ = if fail {
                    self.broker.handle_tickets_failed(&sid, self.now)
                } else {
                    self.broker
                        .handle_tickets(&sid, access("h"), access("s"), self.now)
                };
                self.pump(None)?;
            }
            Op::Advance(ms) => {
                self.now = Timestamp::from_millis(self.now.as_millis() + ms);
                self.broker.handle_timeout(self.now);
                self.pump(None)?;
            }
            Op::Settings(t, block, enabled) => {
                let tenant = ["t1", "t2"][t];
                self.broker
                    .handle_settings_changed(tenant, block, enabled, self.now);
                self.pump(None)?;
            }
            Op::Nudge(s, mode, c) => self.nudge(s, mode, c)?,
            Op::AnswerLive(i) => {
                if !self.held.is_empty() {
                    let i = i.index(self.held.len());
                    self.answer_live(i)?;
                }
            }
            Op::AdminLaunch(p, d) => {
                if let Ok(sid) =
                    self.broker
                        .handle_admin_launch(self.parties[p].clone(), DEVICES[d], self.now)
                {
                    self.learn_session(&sid);
                }
                self.pump(None)?;
            }
        }
        Ok(())
    }

    fn nudge(&mut self, s: Index, mode: Mode, c: Index) -> Result<(), TestCaseError> {
        // Guide towards sessions still alive (asking the machine is fine for guidance).
        let live: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|sid| self.broker.session(sid).is_some())
            .cloned()
            .collect();
        let Some(sid) = Self::pick(&live, &s) else {
            return Ok(());
        };
        let pending_eval = self
            .evals
            .iter()
            .rev()
            .find(|(e, id, _)| *id == sid && !self.decided.contains(e))
            .cloned();
        if let Some((eval, _, mode)) = pending_eval {
            self.allowed.insert((sid, mode));
            self.decided.insert(eval);
            let decision = Decision::Allow {
                granted: mode.with_implied(),
                warnings: Vec::new(),
                chat_allowed: true,
                matched_assignment_ids: BTreeSet::new(),
            };
            let _ = self.broker.handle_decision(eval, decision, self.now);
            self.pump(None)?;
            return Ok(());
        }
        if let Some(pos) = self.tickets.iter().position(|t| *t == sid) {
            self.tickets.remove(pos);
            let access = RelayAccess {
                ticket: "t".into(),
                address: "r:1".into(),
                wss_url: "wss://r:1/v1/relay".into(),
                quic_addr: None,
            };
            let _ = self
                .broker
                .handle_tickets(&sid, access.clone(), access, self.now);
            self.pump(None)?;
            return Ok(());
        }
        let live =
            |conn: Option<&ConnId>, conns: &[ConnId]| conn.filter(|c| conns.contains(c)).copied();
        let helper = live(self.helper_of.get(&sid), &self.conns);
        let sharer = live(self.sharer_of.get(&sid), &self.conns);
        if let (Some(sharer), true) = (sharer, self.consent_asked.remove(&sid)) {
            return self.request_raw(
                sharer,
                ClientRequest::Consent {
                    session_id: sid,
                    allow: true,
                },
                None,
            );
        }
        if let (Some(helper), Some(_)) = (helper, sharer) {
            return self.request_raw(
                helper,
                ClientRequest::RequestMode {
                    session_id: sid,
                    mode,
                    acknowledge_warnings: Warning::ALL.to_vec(),
                },
                None,
            );
        }
        let candidates: Vec<ConnId> = self
            .conns
            .iter()
            .copied()
            .filter(|conn| Some(*conn) != helper)
            .filter(|conn| {
                self.party_of.get(conn).is_some_and(|p| {
                    self.parties[*p].tenant_id == "t1" && self.parties[*p].user_id.is_some()
                })
            })
            .collect();
        if let (Some(code), Some(conn)) =
            (self.code_of.get(&sid).cloned(), Self::pick(&candidates, &c))
        {
            return self.request_raw(
                conn,
                ClientRequest::RedeemCode { code: code.clone() },
                Some(code),
            );
        }
        Ok(())
    }

    fn request(&mut self, conn: ConnId, req: Req) -> Result<(), TestCaseError> {
        let session = |s: &Sim, i: &Index| {
            Self::pick(&s.sessions, i).unwrap_or_else(|| SessionId("none".into()))
        };
        let mut redeeming = None;
        let request = match req {
            Req::Ping => ClientRequest::Ping,
            Req::RequestCode => ClientRequest::RequestCode,
            Req::Redeem { known, garbage } => {
                let code = match (known.and_then(|i| Self::pick(&self.codes, &i)), garbage) {
                    (Some(code), false) => code,
                    _ => "ZZZZ2222".into(),
                };
                redeeming = Some(code.clone());
                ClientRequest::RedeemCode { code }
            }
            Req::RequestSession { device, mode } => ClientRequest::RequestSession {
                device_id: DEVICES[device].into(),
                mode,
                acknowledge_warnings: Vec::new(),
            },
            Req::AnswerLaunch { session: s, accept } => ClientRequest::AnswerLaunch {
                session_id: session(self, &s),
                accept,
            },
            Req::RequestMode {
                session: s,
                mode,
                ack,
            } => ClientRequest::RequestMode {
                session_id: session(self, &s),
                mode,
                acknowledge_warnings: if ack {
                    Warning::ALL.to_vec()
                } else {
                    Vec::new()
                },
            },
            Req::Consent { session: s, allow } => ClientRequest::Consent {
                session_id: session(self, &s),
                allow,
            },
            Req::Chat { session: s } => ClientRequest::Chat {
                session_id: session(self, &s),
                text: "hi".into(),
            },
            Req::End { session: s } => ClientRequest::EndSession {
                session_id: session(self, &s),
            },
        };
        self.request_raw(conn, request, redeeming)
    }

    fn request_raw(
        &mut self,
        conn: ConnId,
        request: ClientRequest,
        redeeming: Option<String>,
    ) -> Result<(), TestCaseError> {
        self.next_id += 1;
        let id = RequestId::Number(self.next_id);
        let is_mode = matches!(request, ClientRequest::RequestMode { .. })
            || (self.delay_live
                && matches!(
                    request,
                    ClientRequest::RequestCode | ClientRequest::RedeemCode { .. }
                ));
        let consent_for = match &request {
            ClientRequest::Consent {
                session_id,
                allow: true,
            } => Some(session_id.clone()),
            _ => None,
        };
        let message = ClientMessage {
            id: id.clone(),
            request,
        };
        // Round-trip through JSON like the server would.
        let parsed = ClientMessage::parse(&message.to_json());
        prop_assert_eq!(parsed.as_ref(), Ok(&message));
        prop_assert!(self.broker.handle_message(conn, message, self.now).is_ok());
        self.consent_in_flight = consent_for.map(|sid| (id.clone(), sid));
        let answers = self.pump(Some(&id))?;
        self.consent_in_flight = None;
        if is_mode {
            prop_assert!(answers.len() <= 1);
        } else {
            prop_assert_eq!(answers.len(), 1, "exactly one answer at once");
        }
        for (to, event) in &answers {
            prop_assert_eq!(*to, conn, "answer went to another connection");
            if let (Some(code), ServerEvent::SessionJoined { .. }) = (&redeeming, event) {
                let key = normalize_code(code).unwrap_or_default();
                let n = self.redeemed.entry(key).or_default();
                *n += 1;
                prop_assert_eq!(*n, 1, "a code was redeemed twice");
            }
        }
        Ok(())
    }

    /// Everyone leaves and time runs out: nothing may stay open.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        self.delay_live = false;
        while !self.held.is_empty() {
            self.answer_live(0)?;
        }
        self.check_live_consistent()?;
        for conn in self.conns.clone() {
            self.broker.handle_disconnect(conn, self.now);
            self.conns.retain(|c| *c != conn);
            self.pump(None)?;
        }
        for _ in 0..4 {
            self.now = Timestamp::from_millis(self.now.as_millis() + 3_600_000);
            self.broker.handle_timeout(self.now);
            self.pump(None)?;
        }
        prop_assert_eq!(self.broker.session_count(), 0);
        prop_assert_eq!(self.live.code_count(), 0);
        prop_assert!(self.live.sessions.is_empty());
        prop_assert!(self.live.users.is_empty() && self.live.devices.is_empty());
        prop_assert_eq!(self.broker.connection_count(), 0);
        for sid in &self.started {
            prop_assert_eq!(
                self.ended.get(sid).copied(),
                Some(1),
                "started, never ended"
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/properties.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_interleavings_keep_every_invariant(ops in prop::collection::vec(op(), 1..150)) {
        let mut sim = Sim::new();
        // A helper and two sharers are there from the start, so runs get somewhere.
        for party in [0, 2, 6] {
            sim.run(Op::Connect(party))?;
        }
        for op in ops {
            sim.run(op)?;
        }
        sim.finish()?;
    }

    #[test]
    fn delayed_and_reordered_live_answers_never_split_a_code_from_its_session(
        ops in prop::collection::vec(op_delayed(), 1..150),
    ) {
        let mut sim = Sim::new();
        sim.delay_live = true;
        for party in [0, 2, 6] {
            sim.run(Op::Connect(party))?;
        }
        for op in ops {
            sim.run(op)?;
            sim.check_live_consistent()?;
        }
        sim.finish()?;
    }

    #[test]
    fn parsing_never_panics(text in "\\PC{0,200}") {
        let _ = ClientMessage::parse(&text);
    }

    #[test]
    fn parsing_json_shaped_noise_never_panics(
        id in prop_oneof![Just("1".to_owned()), Just("\"x\"".to_owned()), Just("-1".to_owned()), Just("null".to_owned())],
        kind in prop::sample::select(ClientRequest::TYPES.to_vec()),
        field in "[a-zA-Z]{1,12}",
        value in prop_oneof![Just("1".to_owned()), Just("\"s\"".to_owned()), Just("[]".to_owned()), Just("{}".to_owned()), Just("true".to_owned())],
    ) {
        let text = format!(r#"{{"id":{id},"type":"{kind}","{field}":{value}}}"#);
        let _ = ClientMessage::parse(&text);
    }
}

/// Guards the generator: random runs must actually reach active sessions and upgrades,
/// or the invariants above would be checked on nothing.
#[test]
fn random_runs_reach_active_sessions_and_upgrades() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};

    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = prop::collection::vec(op(), 1..150);
    let (mut started, mut raised) = (0, 0);
    let runs = 64;
    for _ in 0..runs {
        let ops = strategy.new_tree(&mut runner).expect("a value").current();
        let mut sim = Sim::new();
        for party in [0, 2, 6] {
            sim.run(Op::Connect(party)).expect("invariants hold");
        }
        for op in ops {
            sim.run(op).expect("invariants hold");
        }
        started += usize::from(!sim.started.is_empty());
        raised += usize::from(sim.raised > 0);
        sim.finish().expect("invariants hold");
    }
    assert!(
        started * 4 >= runs,
        "only {started}/{runs} runs reached an active session"
    );
    assert!(
        raised * 10 >= runs,
        "only {raised}/{runs} runs raised a mode"
    );
}
