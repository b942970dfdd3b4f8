//! The machine's view of a signed-in caller, from the token and the directory.

use assist_identity::Identity;
use assist_session::message::Profile;
use assist_session::{DeviceInfo, Party};
use assist_store::Store;
use serde_json::Value;

use crate::facts;

/// Builds the machine's view of a signed-in caller from the token and the directory.
pub async fn party_for(store: &Store, id: &Identity) -> Result<Party, assist_store::StoreError> {
    let s = |v: &Value| v.as_str().map(str::to_owned);
    if id.is_device {
        // A device token: no user, nobody present.
        let d = id.device_id.clone().unwrap_or_default();
        let managed = facts::find_device(store, &id.tenant_id, &d).await?;
        let dev = facts::device(store, &id.tenant_id, &d, &id.tenant_id).await?;
        let name = managed
            .as_ref()
            .and_then(|m| s(&m["deviceName"]))
            .unwrap_or_else(|| d.clone());
        return Ok(Party {
            tenant_id: id.tenant_id.clone(),
            user_id: None,
            user_principal_name: None,
            given_name: None,
            family_name: None,
            profile: Profile {
                display_name: name.clone(),
                job_title: None,
                company_name: None,
                verified_domain: None,
            },
            device: Some(DeviceInfo {
                id: d,
                display_name: Some(name),
                operating_system: managed.as_ref().and_then(|m| s(&m["operatingSystem"])),
                enrolled: dev.enrolled,
            }),
        });
    }
    let user = facts::ensure_user(store, id).await?;
    let p = facts::profile(store, &id.tenant_id, &user).await?;
    let device = match &id.device_id {
        Some(d) => {
            let managed = facts::find_device(store, &id.tenant_id, d).await?;
            let dev = facts::device(store, &id.tenant_id, d, &id.tenant_id).await?;
            Some(DeviceInfo {
                id: d.clone(),
                display_name: managed.as_ref().and_then(|m| s(&m["deviceName"])),
                operating_system: managed.as_ref().and_then(|m| s(&m["operatingSystem"])),
                enrolled: dev.enrolled,
            })
        }
        None => None,
    };
    Ok(Party {
        tenant_id: id.tenant_id.clone(),
        user_id: s(&user["id"]),
        user_principal_name: Some(id.user_principal_name.clone()),
        given_name: id.given_name.clone().or_else(|| s(&user["givenName"])),
        family_name: id.family_name.clone().or_else(|| s(&user["surname"])),
        profile: Profile {
            display_name: s(&p["displayName"]).unwrap_or_else(|| id.user_principal_name.clone()),
            job_title: s(&p["jobTitle"]),
            company_name: s(&p["companyName"]),
            verified_domain: s(&p["verifiedDomain"]),
        },
        device,
    })
}
