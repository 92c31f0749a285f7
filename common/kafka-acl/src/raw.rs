//! The only code of this crate that is `unsafe`: librdkafka's ACL admin
//! API. Each C object is held by a guard whose `Drop` destroys it, so every
//! path out of a function (errors included) frees what it made; pointers
//! into a result event never outlive the event's guard.

use std::ffi::{CStr, CString, c_char, c_int};
use std::ptr::{self, NonNull};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::{AclBinding, AdminError, BrokerError, Described, Operation, PatternType, Permission, ResourceType};

/// Room for librdkafka's error strings.
const ERRSTR: usize = 512;
/// Extra wait on the result queue beyond the request's own timeout, so
/// that librdkafka reports its timeout rather than the queue.
const MARGIN: Duration = Duration::from_secs(5);

type Admin = AdminClient<DefaultClientContext>;

/// Declares a guard owning a librdkafka object, destroyed on drop.
macro_rules! guard {
    ($name:ident, $c:ty, $destroy:path) => {
        struct $name(NonNull<$c>);

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: the pointer came non-null from librdkafka's
                // constructor, is owned by this guard alone and is
                // destroyed exactly once, here.
                unsafe { $destroy(self.0.as_ptr()) }
            }
        }
    };
}

guard!(OwnedAcl, rd::rd_kafka_AclBinding_t, rd::rd_kafka_AclBinding_destroy);
guard!(Queue, rd::rd_kafka_queue_t, rd::rd_kafka_queue_destroy);
guard!(Options, rd::rd_kafka_AdminOptions_t, rd::rd_kafka_AdminOptions_destroy);
guard!(Event, rd::rd_kafka_event_t, rd::rd_kafka_event_destroy);

fn restype(t: ResourceType) -> rd::rd_kafka_ResourceType_t {
    match t {
        ResourceType::Topic => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
        ResourceType::Group => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_GROUP,
        ResourceType::TransactionalId => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
        // librdkafka calls Kafka's resource type 4 (CLUSTER) "BROKER".
        ResourceType::Cluster => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_BROKER,
    }
}

fn pattern(p: PatternType) -> rd::rd_kafka_ResourcePatternType_t {
    match p {
        PatternType::Literal => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
        PatternType::Prefixed => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
    }
}

const OPERATIONS: [(Operation, rd::rd_kafka_AclOperation_t); 11] = {
    use rd::rd_kafka_AclOperation_t as O;
    [
        (Operation::Read, O::RD_KAFKA_ACL_OPERATION_READ),
        (Operation::Write, O::RD_KAFKA_ACL_OPERATION_WRITE),
        (Operation::Create, O::RD_KAFKA_ACL_OPERATION_CREATE),
        (Operation::Delete, O::RD_KAFKA_ACL_OPERATION_DELETE),
        (Operation::Alter, O::RD_KAFKA_ACL_OPERATION_ALTER),
        (Operation::Describe, O::RD_KAFKA_ACL_OPERATION_DESCRIBE),
        (Operation::ClusterAction, O::RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION),
        (Operation::DescribeConfigs, O::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS),
        (Operation::AlterConfigs, O::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS),
        (Operation::IdempotentWrite, O::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE),
        (Operation::All, O::RD_KAFKA_ACL_OPERATION_ALL),
    ]
};

fn operation(o: Operation) -> rd::rd_kafka_AclOperation_t {
    OPERATIONS
        .iter()
        .find(|(op, _)| *op == o)
        .map_or(rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_UNKNOWN, |(_, c)| *c)
}

fn permission(p: Permission) -> rd::rd_kafka_AclPermissionType_t {
    match p {
        Permission::Allow => rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
        Permission::Deny => rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_DENY,
    }
}

fn c_string(binding: &AclBinding, value: &str) -> Result<CString, AdminError> {
    CString::new(value).map_err(|_| AdminError::InvalidBinding {
        binding: binding.to_string(),
        reason: format!("{value:?} holds a NUL byte"),
    })
}

/// Copies a C string librdkafka owns; `""` for NULL.
fn string(s: *const c_char) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live at
    // least as long as the object they were read from, which the caller
    // still holds.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

fn millis(d: Duration) -> c_int {
    c_int::try_from(d.as_millis()).unwrap_or(c_int::MAX)
}

fn broker_error(code: rd::rd_kafka_resp_err_t, message: String) -> BrokerError {
    // SAFETY: rd_kafka_err2name accepts any code and returns a static
    // string.
    let name = string(unsafe { rd::rd_kafka_err2name(code) });
    BrokerError { code: RDKafkaErrorCode::from(code), name, message }
}

/// A librdkafka `rd_kafka_AclBinding_t` of `b`.
fn new_acl(b: &AclBinding) -> Result<OwnedAcl, AdminError> {
    let (name, principal, host) = (c_string(b, &b.name)?, c_string(b, &b.principal)?, c_string(b, &b.host)?);
    let mut errstr = [0 as c_char; ERRSTR];
    // SAFETY: the strings are NUL-terminated and outlive the call
    // (librdkafka copies them); errstr is writable for ERRSTR bytes.
    let acl = unsafe {
        rd::rd_kafka_AclBinding_new(
            restype(b.resource_type),
            name.as_ptr(),
            pattern(b.pattern),
            principal.as_ptr(),
            host.as_ptr(),
            operation(b.operation),
            permission(b.permission),
            errstr.as_mut_ptr(),
            ERRSTR,
        )
    };
    match NonNull::new(acl) {
        Some(acl) => Ok(OwnedAcl(acl)),
        None => Err(AdminError::InvalidBinding { binding: b.to_string(), reason: string(errstr.as_ptr()) }),
    }
}

/// The admin options of `op` with `timeout` as the request timeout,
/// and a new queue for its result.
fn prepare(
    admin: &Admin,
    op: rd::rd_kafka_admin_op_t,
    timeout: Duration,
    request: &'static str,
) -> Result<(Options, Queue), AdminError> {
    let rk = admin.inner().native_ptr();
    let unexpected = |detail: &str| AdminError::Unexpected { request, detail: detail.to_string() };
    // SAFETY: `rk` is the live handle of `admin`, which outlives the
    // guards (they are dropped before the caller returns).
    let options = NonNull::new(unsafe { rd::rd_kafka_AdminOptions_new(rk, op) })
        .map(Options)
        .ok_or_else(|| unexpected("rd_kafka_AdminOptions_new returned NULL"))?;
    let mut errstr = [0 as c_char; ERRSTR];
    // SAFETY: `options` is live; errstr is writable for ERRSTR bytes.
    let set = unsafe {
        rd::rd_kafka_AdminOptions_set_request_timeout(options.0.as_ptr(), millis(timeout), errstr.as_mut_ptr(), ERRSTR)
    };
    if set != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(unexpected(&string(errstr.as_ptr())));
    }
    // SAFETY: as above.
    let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(rk) })
        .map(Queue)
        .ok_or_else(|| unexpected("rd_kafka_queue_new returned NULL"))?;
    Ok((options, queue))
}

/// Waits on `queue` for the result event of type `want`, and checks
/// its request-level error.
fn wait(queue: &Queue, want: c_int, timeout: Duration, request: &'static str) -> Result<Event, AdminError> {
    // SAFETY: `queue` is live; the event returned, if any, is ours to
    // destroy (the guard does).
    let event = unsafe { rd::rd_kafka_queue_poll(queue.0.as_ptr(), millis(timeout + MARGIN)) };
    let event = NonNull::new(event).map(Event).ok_or(AdminError::Timeout { request, timeout })?;
    // SAFETY: `event` is live.
    let kind = unsafe { rd::rd_kafka_event_type(event.0.as_ptr()) };
    if kind != want {
        // SAFETY: `event` is live; the name is static.
        let name = string(unsafe { rd::rd_kafka_event_name(event.0.as_ptr()) });
        return Err(AdminError::Unexpected { request, detail: format!("event {name} ({kind})") });
    }
    // SAFETY: `event` is live; the string lives as long as it does and
    // is copied at once.
    let code = unsafe { rd::rd_kafka_event_error(event.0.as_ptr()) };
    if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: as above.
        let message = string(unsafe { rd::rd_kafka_event_error_string(event.0.as_ptr()) });
        return Err(AdminError::Request { request, error: broker_error(code, message) });
    }
    Ok(event)
}

pub(super) fn create_acls(
    admin: &Admin,
    acls: &[AclBinding],
    timeout: Duration,
) -> Result<Vec<Result<(), BrokerError>>, AdminError> {
    const REQUEST: &str = "CreateAcls";
    let owned = acls.iter().map(new_acl).collect::<Result<Vec<_>, _>>()?;
    let mut pointers: Vec<*mut rd::rd_kafka_AclBinding_t> = owned.iter().map(|a| a.0.as_ptr()).collect();
    let (options, queue) = prepare(admin, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS, timeout, REQUEST)?;
    // SAFETY: the handle, options and queue are live; the array holds
    // `pointers.len()` live bindings, which librdkafka copies before
    // returning (`owned` frees ours afterwards).
    unsafe {
        rd::rd_kafka_CreateAcls(
            admin.inner().native_ptr(),
            pointers.as_mut_ptr(),
            pointers.len(),
            options.0.as_ptr(),
            queue.0.as_ptr(),
        );
    }
    let event = wait(&queue, rd::RD_KAFKA_EVENT_CREATEACLS_RESULT, timeout, REQUEST)?;
    // SAFETY: `event` is a live CreateAcls result event.
    let result = unsafe { rd::rd_kafka_event_CreateAcls_result(event.0.as_ptr()) };
    if result.is_null() {
        return Err(AdminError::Unexpected { request: REQUEST, detail: "no CreateAcls result".into() });
    }
    let mut count = 0usize;
    // SAFETY: `result` lives as long as `event`; librdkafka writes the
    // array's length to `count`.
    let results = unsafe { rd::rd_kafka_CreateAcls_result_acls(result, &mut count) };
    if count != acls.len() || (count > 0 && results.is_null()) {
        let detail = format!("{count} results for {} bindings", acls.len());
        return Err(AdminError::Unexpected { request: REQUEST, detail });
    }
    // The results come in the order of the request's bindings.
    Ok((0..count)
        .map(|i| {
            // SAFETY: `i < count`, the array's length; its elements and
            // their errors live as long as `event`.
            let error = unsafe { rd::rd_kafka_acl_result_error(*results.add(i)) };
            if error.is_null() {
                return Ok(());
            }
            // SAFETY: `error` is live (owned by the result).
            let (code, message) = unsafe { (rd::rd_kafka_error_code(error), rd::rd_kafka_error_string(error)) };
            Err(broker_error(code, string(message)))
        })
        .collect())
}

pub(super) fn describe_acls(
    admin: &Admin,
    principal: Option<&str>,
    timeout: Duration,
) -> Result<Described, AdminError> {
    const REQUEST: &str = "DescribeAcls";
    let principal = principal
        .map(CString::new)
        .transpose()
        .map_err(|_| AdminError::Unexpected { request: REQUEST, detail: "principal holds a NUL byte".into() })?;
    let mut errstr = [0 as c_char; ERRSTR];
    // SAFETY: the principal (or NULL, any) is NUL-terminated and
    // outlives the call; errstr is writable for ERRSTR bytes.
    let filter = unsafe {
        rd::rd_kafka_AclBindingFilter_new(
            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY,
            ptr::null(),
            rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_ANY,
            principal.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
            ptr::null(),
            rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
            rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
            errstr.as_mut_ptr(),
            ERRSTR,
        )
    };
    let filter = NonNull::new(filter)
        .map(OwnedAcl)
        .ok_or_else(|| AdminError::Unexpected { request: REQUEST, detail: string(errstr.as_ptr()) })?;
    let (options, queue) = prepare(admin, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEACLS, timeout, REQUEST)?;
    // SAFETY: handle, filter, options and queue are live; librdkafka
    // copies the filter.
    unsafe {
        rd::rd_kafka_DescribeAcls(admin.inner().native_ptr(), filter.0.as_ptr(), options.0.as_ptr(), queue.0.as_ptr());
    }
    let event = wait(&queue, rd::RD_KAFKA_EVENT_DESCRIBEACLS_RESULT, timeout, REQUEST)?;
    // SAFETY: `event` is a live DescribeAcls result event.
    let result = unsafe { rd::rd_kafka_event_DescribeAcls_result(event.0.as_ptr()) };
    if result.is_null() {
        return Err(AdminError::Unexpected { request: REQUEST, detail: "no DescribeAcls result".into() });
    }
    let mut count = 0usize;
    // SAFETY: `result` lives as long as `event`.
    let acls = unsafe { rd::rd_kafka_DescribeAcls_result_acls(result, &mut count) };
    let mut described = Described::default();
    for i in 0..count {
        // SAFETY: `i < count`; each binding lives as long as `event`,
        // which outlives this loop.
        let acl = unsafe { *acls.add(i) };
        match read_acl(acl) {
            Ok(binding) => described.bindings.push(binding),
            Err(other) => described.other.push(other),
        }
    }
    Ok(described)
}

/// Copies a described binding, or names it when this crate does not
/// model its type, pattern, operation or permission.
fn read_acl(acl: *const rd::rd_kafka_AclBinding_t) -> Result<AclBinding, String> {
    // SAFETY: `acl` is a live binding of a result event the caller
    // holds; its strings are copied before returning.
    let (t, name, p, principal, host, op, perm) = unsafe {
        (
            rd::rd_kafka_AclBinding_restype(acl),
            string(rd::rd_kafka_AclBinding_name(acl)),
            rd::rd_kafka_AclBinding_resource_pattern_type(acl),
            string(rd::rd_kafka_AclBinding_principal(acl)),
            string(rd::rd_kafka_AclBinding_host(acl)),
            rd::rd_kafka_AclBinding_operation(acl),
            rd::rd_kafka_AclBinding_permission_type(acl),
        )
    };
    let resource_type =
        [ResourceType::Topic, ResourceType::Group, ResourceType::TransactionalId, ResourceType::Cluster]
            .into_iter()
            .find(|r| restype(*r) == t);
    let pattern_type = [PatternType::Literal, PatternType::Prefixed].into_iter().find(|x| pattern(*x) == p);
    let operation = OPERATIONS.iter().find(|(_, c)| *c == op).map(|(o, _)| *o);
    let permission = [Permission::Allow, Permission::Deny].into_iter().find(|x| permission(*x) == perm);
    match (resource_type, pattern_type, operation, permission) {
        (Some(resource_type), Some(pattern), Some(operation), Some(permission)) => {
            Ok(AclBinding { principal, resource_type, name, pattern, operation, permission, host })
        }
        _ => {
            // SAFETY: the *_name functions accept any value and return
            // static strings.
            let names = unsafe {
                [
                    string(rd::rd_kafka_ResourceType_name(t)),
                    string(rd::rd_kafka_ResourcePatternType_name(p)),
                    string(rd::rd_kafka_AclOperation_name(op)),
                    string(rd::rd_kafka_AclPermissionType_name(perm)),
                ]
            };
            let [t, p, op, perm] = names;
            Err(format!("{perm} {principal} {op} on {t} {p} {name:?} from host {host}"))
        }
    }
}
