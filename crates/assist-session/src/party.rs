//! Who is on a signalling connection: identity facts the IO layer reads from the token and
//! the directory when the connection opens.

use serde::{Deserialize, Serialize};

use crate::message::Profile;

/// The signed-in principal of one connection, with everything the machine needs for the trust
/// screen and the session report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Party {
    /// The principal's tenant.
    pub tenant_id: String,
    /// The user's object id; `None` for a device token (no user signed in: nobody present).
    pub user_id: Option<String>,
    /// The user principal name / email, for reports.
    #[serde(default)]
    pub user_principal_name: Option<String>,
    /// Given (first) name, for reports.
    #[serde(default)]
    pub given_name: Option<String>,
    /// Family (last) name, for reports.
    #[serde(default)]
    pub family_name: Option<String>,
    /// What the other side is shown.
    pub profile: Profile,
    /// The device this connection runs on, when the token names one (`deviceid`, or a device
    /// token). A connection with a device receives launch requests for it.
    #[serde(default)]
    pub device: Option<DeviceInfo>,
}

/// A device as the report needs it (Graph `remoteAssistanceReporting` fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// The Entra device id.
    pub id: String,
    /// The device name, if known.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The operating system, if known.
    #[serde(default)]
    pub operating_system: Option<String>,
    /// Whether the device is enrolled (managed) in the tenant.
    #[serde(default)]
    pub enrolled: bool,
}

/// A user by tenant and object id: what [`crate::Output::Evaluate`] names for the IO layer to
/// load facts for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    /// The tenant.
    pub tenant_id: String,
    /// The user's object id.
    pub user_id: String,
}

impl Party {
    /// The party's user, if a user is signed in.
    pub fn user_ref(&self) -> Option<UserRef> {
        self.user_id.as_ref().map(|user_id| UserRef {
            tenant_id: self.tenant_id.clone(),
            user_id: user_id.clone(),
        })
    }
}
