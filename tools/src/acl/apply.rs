//! Creating the roles' bindings on the cluster, and comparing them with
//! what is there, over librdkafka's admin API (`shoal-kafka-acl`). The
//! connection is the configuration's `[kafka]` section (bootstrap servers,
//! `security_protocol`, `kafka.options` with an admin's SASL credentials),
//! built like every other Shoal client's (`shoal_kafka::client_config`).

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use shoal_kafka::settings::KafkaSettings;

use super::{AclAdmin, AclBinding, AclError, RoleAcls};

/// An admin connection to the cluster of `kafka`; each request must finish
/// within `timeout`.
pub fn connect(kafka: &KafkaSettings, timeout: Duration) -> Result<AclAdmin, AclError> {
    let config = shoal_kafka::client_config(kafka, "shoal-acl");
    Ok(AclAdmin::new(&config, timeout)?)
}

/// Every binding of `roles`, once each (roles can share a principal).
pub fn distinct(roles: &[RoleAcls]) -> Vec<AclBinding> {
    let mut seen = BTreeSet::new();
    roles.iter().flat_map(RoleAcls::bindings).filter(|b| seen.insert((*b).clone())).cloned().collect()
}

/// Creates every binding of `roles` (one that exists already counts as
/// created) and writes a line per binding: `created <binding>` or
/// `refused <binding>: <reason>`. Returns how many were created; an error
/// when the request failed as a whole or any binding was refused.
pub fn apply(admin: &AclAdmin, roles: &[RoleAcls], out: &mut impl Write) -> Result<usize, AclError> {
    let bindings = distinct(roles);
    let results = admin.create(&bindings)?;
    let mut reasons: Vec<String> = Vec::new();
    for (binding, result) in bindings.iter().zip(&results) {
        match result {
            Ok(()) => writeln!(out, "created {binding}")?,
            Err(error) => {
                writeln!(out, "refused {binding}: {error}")?;
                let reason = error.explained();
                if !reasons.contains(&reason) {
                    reasons.push(reason);
                }
            }
        }
    }
    let refused = results.iter().filter(|r| r.is_err()).count();
    if refused > 0 {
        return Err(AclError::Refused { refused, total: bindings.len(), reasons: reasons.join("; ") });
    }
    Ok(bindings.len())
}

/// The roles' bindings against the cluster's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Expected and on the cluster.
    pub present: Vec<AclBinding>,
    /// Expected, not on the cluster.
    pub missing: Vec<AclBinding>,
    /// On the cluster for these principals, not expected: more than the
    /// roles need (or bindings of another configuration).
    pub extra: Vec<AclBinding>,
    /// Bindings of these principals of kinds `shoal-acl` does not model.
    pub other: Vec<String>,
}

impl Listing {
    /// Writes the bindings, marked `present`, `missing` or `extra`, and a
    /// summary line.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        for b in &self.present {
            writeln!(out, "present {b}")?;
        }
        for b in &self.missing {
            writeln!(out, "missing {b}")?;
        }
        for b in &self.extra {
            writeln!(out, "extra   {b}")?;
        }
        for other in &self.other {
            writeln!(out, "other   {other}")?;
        }
        writeln!(
            out,
            "acl list: present={} missing={} extra={} other={}",
            self.present.len(),
            self.missing.len(),
            self.extra.len(),
            self.other.len()
        )?;
        if self.present.is_empty() && self.extra.is_empty() && self.other.is_empty() {
            writeln!(
                out,
                "note: the cluster answered no bindings for these principals; a broker without an authorizer \
                 answers so too (librdkafka drops DescribeAcls' SECURITY_DISABLED): --apply tells them apart"
            )?;
        }
        Ok(())
    }
}

/// Compares the roles' bindings with the cluster's bindings of their
/// principals (DescribeAcls, one request per principal).
pub fn list(admin: &AclAdmin, roles: &[RoleAcls]) -> Result<Listing, AclError> {
    let expected: BTreeSet<AclBinding> = distinct(roles).into_iter().collect();
    let principals: BTreeSet<&str> = roles.iter().map(|r| r.principal.as_str()).collect();
    let mut on_cluster = BTreeSet::new();
    let mut listing = Listing::default();
    for principal in principals {
        let described = admin.describe(Some(principal))?;
        on_cluster.extend(described.bindings);
        listing.other.extend(described.other);
    }
    listing.present = expected.intersection(&on_cluster).cloned().collect();
    listing.missing = expected.difference(&on_cluster).cloned().collect();
    listing.extra = on_cluster.difference(&expected).cloned().collect();
    Ok(listing)
}
