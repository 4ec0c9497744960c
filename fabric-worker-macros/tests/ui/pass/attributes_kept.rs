// Attributes on the function must survive the expansion: if the
// `#[allow(unused_variables)]` below were dropped, `deny(warnings)` would turn
// the unused variable into an error.
#![deny(warnings)]

use fabric_worker::prelude::*;

/// Handles `audit` messages.
///
/// Doc comments are kept too.
#[handler(message_type = "audit")]
#[allow(unused_variables)]
#[doc(alias = "audit_handler")]
pub(crate) async fn audit(ctx: Context) -> Result<(), HandlerError> {
    let unused = 1;
    Ok(())
}

#[allow(unused_variables)]
#[handler(message_type = "audit.before")]
async fn attribute_before_handler(ctx: Context) {
    let unused = 1;
}

fn main() {}
