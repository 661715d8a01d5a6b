//! Handlers that ship with the SDK: the configurable test handler `tasker.test`
//! ([`test_handler`]) and the example order-fulfillment workflow ([`order_fulfillment`]).

pub mod order_fulfillment;
pub mod test_handler;

use std::sync::Arc;

pub use order_fulfillment::{ProcessPayment, ReserveInventory, ShipOrder, ValidateOrder};
pub use test_handler::{TEST_HANDLER_CLASS, TestBehaviour, TestHandler};

use crate::HandlerRegistry;

/// A registry with every built-in handler: `tasker.test` (logging executions to the file named
/// by `TASKER_TEST_EXECUTION_LOG`, if set) and the four `OrderFulfillment::*` handlers.
pub fn registry() -> HandlerRegistry {
    let mut registry = HandlerRegistry::new();
    registry.register(TEST_HANDLER_CLASS, Arc::new(TestHandler::from_env()));
    registry.register(
        order_fulfillment::VALIDATE_ORDER_CLASS,
        Arc::new(ValidateOrder),
    );
    registry.register(
        order_fulfillment::RESERVE_INVENTORY_CLASS,
        Arc::new(ReserveInventory),
    );
    registry.register(
        order_fulfillment::PROCESS_PAYMENT_CLASS,
        Arc::new(ProcessPayment),
    );
    registry.register(order_fulfillment::SHIP_ORDER_CLASS, Arc::new(ShipOrder));
    registry
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_registry_offers_every_builtin_class() {
        assert_eq!(
            super::registry().handler_classes(),
            vec![
                "OrderFulfillment::ProcessPaymentHandler",
                "OrderFulfillment::ReserveInventoryHandler",
                "OrderFulfillment::ShipOrderHandler",
                "OrderFulfillment::ValidateOrderHandler",
                "tasker.test",
            ]
        );
    }
}
