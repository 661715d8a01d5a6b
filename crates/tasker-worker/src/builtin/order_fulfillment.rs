//! Handlers of the example workflow `examples/templates/order_fulfillment.yaml`: validate an
//! order, reserve its inventory and take payment in parallel, then ship it.
//!
//! They are pure data transformations, deterministic (no randomness, no clock), so a task run
//! twice gives the same outputs. The task context follows the template's schema:
//! `{"order_id": 1, "customer": {"email": "…", "name": "…"}, "items": [{"sku": "…",
//! "quantity": 1, "unit_price_cents": 1999}]}`. Invalid input is a permanent failure with
//! `error_class` `InvalidOrder`.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::handler::{StepContext, StepFailure, StepHandler};

/// Handler class of [`ValidateOrder`].
pub const VALIDATE_ORDER_CLASS: &str = "OrderFulfillment::ValidateOrderHandler";
/// Handler class of [`ReserveInventory`].
pub const RESERVE_INVENTORY_CLASS: &str = "OrderFulfillment::ReserveInventoryHandler";
/// Handler class of [`ProcessPayment`].
pub const PROCESS_PAYMENT_CLASS: &str = "OrderFulfillment::ProcessPaymentHandler";
/// Handler class of [`ShipOrder`].
pub const SHIP_ORDER_CLASS: &str = "OrderFulfillment::ShipOrderHandler";

/// The `error_class` of every input problem these handlers find.
pub const INVALID_ORDER_ERROR_CLASS: &str = "InvalidOrder";

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    sku: String,
    quantity: u64,
    unit_price_cents: u64,
}

/// The parts of the task context the handlers use.
#[derive(Debug)]
struct Order {
    order_id: u64,
    items: Vec<Item>,
}

fn invalid(message: impl Into<String>) -> StepFailure {
    StepFailure::permanent(message).with_error_class(INVALID_ORDER_ERROR_CLASS)
}

fn read_order(context: &Map<String, Value>) -> Result<Order, StepFailure> {
    let order_id = context
        .get("order_id")
        .and_then(Value::as_u64)
        .filter(|id| *id >= 1)
        .ok_or_else(|| invalid("order_id must be an integer >= 1"))?;
    let items = match context.get("items") {
        Some(Value::Array(items)) => items,
        _ => return Err(invalid("items must be an array")),
    };
    let items = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let sku = item
                .get("sku")
                .and_then(Value::as_str)
                .filter(|sku| !sku.is_empty())
                .ok_or_else(|| invalid(format!("items[{index}].sku must be a non-empty string")))?;
            let quantity = item
                .get("quantity")
                .and_then(Value::as_u64)
                .filter(|quantity| *quantity >= 1)
                .ok_or_else(|| {
                    invalid(format!("items[{index}].quantity must be an integer >= 1"))
                })?;
            let unit_price_cents = match item.get("unit_price_cents") {
                None | Some(Value::Null) => 0,
                Some(price) => price.as_u64().ok_or_else(|| {
                    invalid(format!(
                        "items[{index}].unit_price_cents must be an integer >= 0"
                    ))
                })?,
            };
            Ok(Item {
                sku: sku.to_owned(),
                quantity,
                unit_price_cents,
            })
        })
        .collect::<Result<Vec<_>, StepFailure>>()?;
    Ok(Order { order_id, items })
}

fn order_total_cents(items: &[Item]) -> Result<u64, StepFailure> {
    items.iter().try_fold(0_u64, |total, item| {
        item.quantity
            .checked_mul(item.unit_price_cents)
            .and_then(|line| total.checked_add(line))
            .ok_or_else(|| invalid("the order total does not fit in 64 bits"))
    })
}

fn config_str<'a>(step: &'a StepContext, key: &str, default: &'a str) -> &'a str {
    step.handler_config
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or(default)
}

fn config_bool(step: &StepContext, key: &str, default: bool) -> bool {
    step.handler_config
        .get(key)
        .and_then(Value::as_bool)
        .unwrap_or(default)
}

/// 64-bit FNV-1a: a small, stable hash for deterministic ids.
fn fnv1a(text: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    text.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// `OrderFulfillment::ValidateOrderHandler`: checks the order (ids, a customer email, 1 to
/// `handler_config.max_items` (default 100) well-formed items) and returns its summary:
/// `{"order_id", "customer_email", "item_count", "total_quantity", "total_cents",
/// "validated": true}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateOrder;

#[async_trait]
impl StepHandler for ValidateOrder {
    async fn process(&self, step: StepContext) -> Result<Value, StepFailure> {
        let order = read_order(&step.task_context)?;
        if order.items.is_empty() {
            return Err(invalid(format!("order {} has no items", order.order_id)));
        }
        let max_items = step
            .handler_config
            .get("max_items")
            .and_then(Value::as_u64)
            .unwrap_or(100);
        if order.items.len() as u64 > max_items {
            return Err(invalid(format!(
                "order {} has {} items; at most {max_items} are allowed",
                order.order_id,
                order.items.len()
            )));
        }
        let email = step
            .task_context
            .get("customer")
            .and_then(|customer| customer.get("email"))
            .and_then(Value::as_str)
            .filter(|email| email.contains('@'))
            .ok_or_else(|| invalid("customer.email must be an email address"))?;
        let total_quantity: u64 = order.items.iter().map(|item| item.quantity).sum();
        Ok(json!({
            "order_id": order.order_id,
            "customer_email": email,
            "item_count": order.items.len(),
            "total_quantity": total_quantity,
            "total_cents": order_total_cents(&order.items)?,
            "validated": true,
        }))
    }
}

/// `OrderFulfillment::ReserveInventoryHandler`: reserves every item in
/// `handler_config.warehouse` (default `main`) for `hold_minutes` (default 30) and returns
/// `{"order_id", "warehouse", "hold_minutes", "reservations": [{"sku", "quantity",
/// "reservation_id"}]}` with ids `RSV-<order_id>-<line>-<sku>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReserveInventory;

#[async_trait]
impl StepHandler for ReserveInventory {
    async fn process(&self, step: StepContext) -> Result<Value, StepFailure> {
        let order = read_order(&step.task_context)?;
        let warehouse = config_str(&step, "warehouse", "main");
        let hold_minutes = step
            .handler_config
            .get("hold_minutes")
            .and_then(Value::as_u64)
            .unwrap_or(30);
        let reservations: Vec<Value> = order
            .items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                json!({
                    "sku": item.sku,
                    "quantity": item.quantity,
                    "reservation_id": format!("RSV-{}-{}-{}", order.order_id, index + 1, item.sku),
                })
            })
            .collect();
        Ok(json!({
            "order_id": order.order_id,
            "warehouse": warehouse,
            "hold_minutes": hold_minutes,
            "reservations": reservations,
        }))
    }
}

/// `OrderFulfillment::ProcessPaymentHandler`: charges the order's total (Σ quantity ×
/// unit_price_cents) through `handler_config.gateway` (default `sandbox`) and returns
/// `{"order_id", "transaction_id", "amount_cents", "gateway", "captured"}`; the transaction id is
/// `TXN-` and 16 hex digits derived from the order id and amount, so it is the same on every
/// attempt (an idempotent charge).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessPayment;

#[async_trait]
impl StepHandler for ProcessPayment {
    async fn process(&self, step: StepContext) -> Result<Value, StepFailure> {
        let order = read_order(&step.task_context)?;
        let amount_cents = order_total_cents(&order.items)?;
        let transaction_id = format!(
            "TXN-{:016x}",
            fnv1a(&format!("{}:{amount_cents}", order.order_id))
        );
        Ok(json!({
            "order_id": order.order_id,
            "transaction_id": transaction_id,
            "amount_cents": amount_cents,
            "gateway": config_str(&step, "gateway", "sandbox"),
            "captured": config_bool(&step, "capture", true),
        }))
    }
}

/// `OrderFulfillment::ShipOrderHandler`: ships the reserved items once paid. Needs
/// `previous_results.reserve_inventory.reservations` and
/// `previous_results.process_payment.transaction_id`; returns `{"order_id", "tracking_number",
/// "transaction_id", "reservation_ids", "notifications_sent"}` with a tracking number `TRK-` and
/// 12 hex digits derived from the order and transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShipOrder;

#[async_trait]
impl StepHandler for ShipOrder {
    async fn process(&self, step: StepContext) -> Result<Value, StepFailure> {
        let order = read_order(&step.task_context)?;
        let reservations = step
            .previous_results
            .get("reserve_inventory")
            .and_then(|result| result.get("reservations"))
            .and_then(Value::as_array)
            .ok_or_else(|| {
                invalid("ship_order needs previous_results.reserve_inventory.reservations")
            })?;
        let transaction_id = step
            .previous_results
            .get("process_payment")
            .and_then(|result| result.get("transaction_id"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                invalid("ship_order needs previous_results.process_payment.transaction_id")
            })?;
        let reservation_ids: Vec<&str> = reservations
            .iter()
            .filter_map(|reservation| reservation.get("reservation_id").and_then(Value::as_str))
            .collect();
        let tracking_number = format!(
            "TRK-{:012X}",
            fnv1a(&format!("{}:{transaction_id}", order.order_id)) & 0xFFFF_FFFF_FFFF
        );
        Ok(json!({
            "order_id": order.order_id,
            "tracking_number": tracking_number,
            "transaction_id": transaction_id,
            "reservation_ids": reservation_ids,
            "notifications_sent": config_bool(&step, "send_notifications", true),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasker_protocol::{StepMetadata, StepRequest};
    use uuid::Uuid;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn step(name: &str, config: Value, context: Value, previous: Value) -> StepContext {
        let request = StepRequest {
            step_id: 1,
            task_id: 1,
            step_name: name.to_owned(),
            handler_class: name.to_owned(),
            handler_config: object(config),
            task_context: object(context),
            previous_results: object(previous),
            metadata: StepMetadata {
                attempt: 1,
                retry_limit: 3,
                timeout_ms: None,
                idempotency_key: StepMetadata::idempotency_key_for(1, 1),
            },
        };
        StepContext::from_request(Uuid::nil(), &request, "w")
    }

    fn order() -> Value {
        json!({
            "order_id": 42,
            "customer": { "email": "ada@example.com", "name": "Ada" },
            "items": [
                { "sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1500 },
                { "sku": "PEN-9", "quantity": 1, "unit_price_cents": 250 },
            ],
        })
    }

    #[tokio::test]
    async fn the_whole_workflow_runs_on_its_own_outputs() {
        let validated = ValidateOrder
            .process(step(
                "validate_order",
                json!({ "max_items": 100 }),
                order(),
                json!({}),
            ))
            .await
            .expect("valid order");
        assert_eq!(
            validated,
            json!({
                "order_id": 42,
                "customer_email": "ada@example.com",
                "item_count": 2,
                "total_quantity": 3,
                "total_cents": 3250,
                "validated": true,
            })
        );
        let previous = json!({ "validate_order": validated });
        let reserved = ReserveInventory
            .process(step(
                "reserve_inventory",
                json!({ "warehouse": "east" }),
                order(),
                previous.clone(),
            ))
            .await
            .expect("reserved");
        assert_eq!(reserved["warehouse"], json!("east"));
        assert_eq!(reserved["hold_minutes"], json!(30));
        assert_eq!(
            reserved["reservations"][1],
            json!({ "sku": "PEN-9", "quantity": 1, "reservation_id": "RSV-42-2-PEN-9" })
        );
        let paid = ProcessPayment
            .process(step(
                "process_payment",
                json!({}),
                order(),
                previous.clone(),
            ))
            .await
            .expect("paid");
        assert_eq!(paid["amount_cents"], json!(3250));
        assert_eq!(paid["gateway"], json!("sandbox"));
        let transaction_id = paid["transaction_id"]
            .as_str()
            .expect("a string")
            .to_owned();
        assert!(transaction_id.starts_with("TXN-") && transaction_id.len() == 20);

        let again = ProcessPayment
            .process(step("process_payment", json!({}), order(), previous))
            .await
            .expect("paid");
        assert_eq!(
            again["transaction_id"],
            json!(transaction_id),
            "deterministic"
        );

        let shipped = ShipOrder
            .process(step(
                "ship_order",
                json!({ "send_notifications": false }),
                order(),
                json!({ "reserve_inventory": reserved, "process_payment": paid }),
            ))
            .await
            .expect("shipped");
        assert_eq!(shipped["transaction_id"], json!(transaction_id));
        assert_eq!(
            shipped["reservation_ids"],
            json!(["RSV-42-1-BOOK-1", "RSV-42-2-PEN-9"])
        );
        assert_eq!(shipped["notifications_sent"], json!(false));
        let tracking = shipped["tracking_number"].as_str().expect("a string");
        assert!(
            tracking.starts_with("TRK-") && tracking.len() == 16,
            "{tracking}"
        );
    }

    #[tokio::test]
    async fn an_order_without_items_is_rejected_permanently() {
        let mut empty = order();
        empty["items"] = json!([]);
        let failure = ValidateOrder
            .process(step("validate_order", json!({}), empty, json!({})))
            .await
            .expect_err("no items");
        assert!(!failure.is_retryable());
        assert_eq!(failure.error_class(), INVALID_ORDER_ERROR_CLASS);
        assert!(failure.message().contains("no items"), "{failure}");
    }

    #[tokio::test]
    async fn too_many_items_and_bad_quantities_are_named() {
        let failure = ValidateOrder
            .process(step(
                "validate_order",
                json!({ "max_items": 1 }),
                order(),
                json!({}),
            ))
            .await
            .expect_err("too many");
        assert!(failure.message().contains("at most 1"), "{failure}");

        let mut bad = order();
        bad["items"][1]["quantity"] = json!(0);
        let failure = ValidateOrder
            .process(step("validate_order", json!({}), bad, json!({})))
            .await
            .expect_err("bad quantity");
        assert!(failure.message().contains("items[1].quantity"), "{failure}");
    }

    #[tokio::test]
    async fn shipping_without_parent_results_fails_permanently() {
        let failure = ShipOrder
            .process(step("ship_order", json!({}), order(), json!({})))
            .await
            .expect_err("no parents");
        assert!(!failure.is_retryable());
        assert!(failure.message().contains("reserve_inventory"), "{failure}");
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
