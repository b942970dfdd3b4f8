//! Intune resource actions and the session-mode lattice.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A Remote Help resource action, as it appears in an Intune role definition's
/// `allowedResourceActions` / `notAllowedResourceActions`.
///
/// Serialises as its canonical Intune string (see [`ResourceAction::as_str`]);
/// deserialising an unknown string fails, like [`ResourceAction::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum ResourceAction {
    /// "Offer remote assistance": `Microsoft.Intune_RemoteTasks_RequestRemoteAssistance`.
    RequestRemoteAssistance,
    /// "Remote assistance read": `Microsoft.Intune_RemoteAssistance_Read`.
    Read,
    /// "Remote assistance update" (settings): `Microsoft.Intune_RemoteAssistance_Update`.
    /// Grants no session mode.
    Update,
    /// "View reports": `Microsoft.Intune_RemoteAssistance_ViewReports`. Grants no session mode.
    ViewReports,
    /// View the sharer's screen: `Microsoft.Intune_RemoteAssistanceApp_ViewScreen`.
    ViewScreen,
    /// Take full control: `Microsoft.Intune_RemoteAssistanceApp_TakeFullControl`.
    TakeFullControl,
    /// Elevation (UAC prompts): `Microsoft.Intune_RemoteAssistanceApp_Elevation`.
    Elevation,
    /// Unattended control: `Microsoft.Intune_RemoteAssistanceApp_Unattended`.
    Unattended,
}

impl ResourceAction {
    /// Every known action, in a stable order.
    pub const ALL: [ResourceAction; 8] = [
        ResourceAction::RequestRemoteAssistance,
        ResourceAction::Read,
        ResourceAction::Update,
        ResourceAction::ViewReports,
        ResourceAction::ViewScreen,
        ResourceAction::TakeFullControl,
        ResourceAction::Elevation,
        ResourceAction::Unattended,
    ];

    /// The canonical Intune action string.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResourceAction::RequestRemoteAssistance => {
                "Microsoft.Intune_RemoteTasks_RequestRemoteAssistance"
            }
            ResourceAction::Read => "Microsoft.Intune_RemoteAssistance_Read",
            ResourceAction::Update => "Microsoft.Intune_RemoteAssistance_Update",
            ResourceAction::ViewReports => "Microsoft.Intune_RemoteAssistance_ViewReports",
            ResourceAction::ViewScreen => "Microsoft.Intune_RemoteAssistanceApp_ViewScreen",
            ResourceAction::TakeFullControl => {
                "Microsoft.Intune_RemoteAssistanceApp_TakeFullControl"
            }
            ResourceAction::Elevation => "Microsoft.Intune_RemoteAssistanceApp_Elevation",
            ResourceAction::Unattended => "Microsoft.Intune_RemoteAssistanceApp_Unattended",
        }
    }

    /// Parses an Intune action string.
    ///
    /// Matching ignores ASCII case (Intune treats action names case-insensitively)
    /// but nothing else: no trimming, no wildcards. Anything else is an
    /// [`UnknownAction`], which the admin API reports as a 400.
    pub fn parse(s: &str) -> Result<ResourceAction, UnknownAction> {
        ResourceAction::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownAction {
                action: s.to_owned(),
            })
    }

    /// The session mode this action grants directly, if it is a mode action.
    pub const fn mode(self) -> Option<Mode> {
        match self {
            ResourceAction::ViewScreen => Some(Mode::ViewOnly),
            ResourceAction::TakeFullControl => Some(Mode::FullControl),
            ResourceAction::Elevation => Some(Mode::Elevation),
            ResourceAction::Unattended => Some(Mode::Unattended),
            ResourceAction::RequestRemoteAssistance
            | ResourceAction::Read
            | ResourceAction::Update
            | ResourceAction::ViewReports => None,
        }
    }
}

impl fmt::Display for ResourceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceAction {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResourceAction::parse(s)
    }
}

impl From<ResourceAction> for &'static str {
    fn from(a: ResourceAction) -> Self {
        a.as_str()
    }
}

impl TryFrom<String> for ResourceAction {
    type Error = UnknownAction;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        ResourceAction::parse(&s)
    }
}

/// The error for an action string that is not a known Remote Help action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAction {
    action: String,
}

impl UnknownAction {
    /// The rejected string, exactly as given.
    pub fn action(&self) -> &str {
        &self.action
    }
}

impl fmt::Display for UnknownAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown resource action `{}`", self.action)
    }
}

impl std::error::Error for UnknownAction {}

/// A session mode a helper requests.
///
/// Modes form a chain: `unattended` ⇒ `elevation` ⇒ `fullControl` ⇒ `viewOnly`
/// (the `Ord` order is that chain, lowest first). Serialises camelCase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// See the sharer's screen only.
    ViewOnly,
    /// Control mouse and keyboard.
    FullControl,
    /// Full control plus answering elevation (UAC) prompts.
    Elevation,
    /// Elevation without the sharer present.
    Unattended,
}

impl Mode {
    /// Every mode, lowest first.
    pub const ALL: [Mode; 4] = [
        Mode::ViewOnly,
        Mode::FullControl,
        Mode::Elevation,
        Mode::Unattended,
    ];

    /// The camelCase name used on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::ViewOnly => "viewOnly",
            Mode::FullControl => "fullControl",
            Mode::Elevation => "elevation",
            Mode::Unattended => "unattended",
        }
    }

    /// The resource action that grants this mode directly.
    pub const fn action(self) -> ResourceAction {
        match self {
            Mode::ViewOnly => ResourceAction::ViewScreen,
            Mode::FullControl => ResourceAction::TakeFullControl,
            Mode::Elevation => ResourceAction::Elevation,
            Mode::Unattended => ResourceAction::Unattended,
        }
    }

    /// Whether holding `self` also grants `other` (true for `self` itself).
    pub fn implies(self, other: Mode) -> bool {
        self >= other
    }

    /// `self` and every mode it implies.
    pub fn with_implied(self) -> BTreeSet<Mode> {
        Mode::ALL.into_iter().filter(|m| self.implies(*m)).collect()
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
