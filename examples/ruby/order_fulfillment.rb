# frozen_string_literal: true

# The order-fulfillment workflow's handlers in Ruby (examples/templates/order_fulfillment.yaml):
# validate the order, reserve its inventory and take payment in parallel, then ship it.
#
# Run a worker with them (from the repository root, with the orchestrator listening on 5555):
#
#   ruby -Isdk/ruby/lib sdk/ruby/bin/tasker-worker --connect tcp://127.0.0.1:5555 --require examples/ruby/order_fulfillment.rb
#
# They are pure data transformations, deterministic (no randomness, no clock), and give exactly
# the outputs of the Rust built-ins (crates/tasker-worker/src/builtin/order_fulfillment.rs), so a
# task may run on Rust and Ruby workers at once. The task context follows the template's schema:
# {"order_id": 1, "customer": {"email": "…", "name": "…"},
#  "items": [{"sku": "…", "quantity": 1, "unit_price_cents": 1999}]}.
# Invalid input is a permanent failure with error_class "InvalidOrder".

require "tasker_worker"

module OrderFulfillment
  # Bad input: a permanent failure reported with error_class "InvalidOrder".
  class InvalidOrder < TaskerWorker::PermanentError
    def initialize(message)
      super(message, error_class: "InvalidOrder")
    end
  end

  # One line of an order.
  Item = Struct.new(:sku, :quantity, :unit_price_cents, keyword_init: true)
  # The parts of the task context the handlers use.
  Order = Struct.new(:order_id, :items, keyword_init: true)

  U64_MAX = (2**64) - 1

  # What every handler reads: the context, the config and the hashing for deterministic ids.
  module OrderReading
    module_function

    def read_order(context)
      order_id = context["order_id"]
      raise InvalidOrder, "order_id must be an integer >= 1" unless unsigned?(order_id) && order_id >= 1

      items = context["items"]
      raise InvalidOrder, "items must be an array" unless items.is_a?(Array)

      Order.new(order_id: order_id, items: items.each_with_index.map { |item, index| read_item(item, index) })
    end

    def read_item(item, index)
      item = {} unless item.is_a?(Hash)
      sku = item["sku"]
      raise InvalidOrder, "items[#{index}].sku must be a non-empty string" unless sku.is_a?(String) && !sku.empty?

      quantity = item["quantity"]
      unless unsigned?(quantity) && quantity >= 1
        raise InvalidOrder, "items[#{index}].quantity must be an integer >= 1"
      end

      price = item["unit_price_cents"]
      price = 0 if price.nil?
      raise InvalidOrder, "items[#{index}].unit_price_cents must be an integer >= 0" unless unsigned?(price)

      Item.new(sku: sku, quantity: quantity, unit_price_cents: price)
    end

    def unsigned?(value)
      value.is_a?(Integer) && value.between?(0, U64_MAX)
    end

    def total_cents(items)
      total = items.sum { |item| item.quantity * item.unit_price_cents }
      raise InvalidOrder, "the order total does not fit in 64 bits" if total > U64_MAX

      total
    end

    def config_string(step, key, default)
      value = step.handler_config[key]
      value.is_a?(String) ? value : default
    end

    def config_bool(step, key, default)
      value = step.handler_config[key]
      [true, false].include?(value) ? value : default
    end

    def config_unsigned(step, key, default)
      value = step.handler_config[key]
      unsigned?(value) ? value : default
    end

    # 64-bit FNV-1a: a small, stable hash for deterministic ids.
    def fnv1a(text)
      text.each_byte.reduce(0xcbf2_9ce4_8422_2325) { |hash, byte| ((hash ^ byte) * 0x0000_0100_0000_01b3) & U64_MAX }
    end
  end

  # Checks the order (ids, a customer email, 1 to handler_config.max_items (default 100)
  # well-formed items) and returns its summary.
  class ValidateOrderHandler < TaskerWorker::StepHandler
    include OrderReading
    handles "OrderFulfillment::ValidateOrderHandler"

    def process(task, _sequence, step)
      order = read_order(task.context)
      raise InvalidOrder, "order #{order.order_id} has no items" if order.items.empty?

      max_items = config_unsigned(step, "max_items", 100)
      if order.items.length > max_items
        raise InvalidOrder,
              "order #{order.order_id} has #{order.items.length} items; at most #{max_items} are allowed"
      end

      customer = task.context["customer"]
      email = customer.is_a?(Hash) ? customer["email"] : nil
      raise InvalidOrder, "customer.email must be an email address" unless email.is_a?(String) && email.include?("@")

      {
        "order_id" => order.order_id,
        "customer_email" => email,
        "item_count" => order.items.length,
        "total_quantity" => order.items.sum(&:quantity),
        "total_cents" => total_cents(order.items),
        "validated" => true
      }
    end
  end

  # Reserves every item in handler_config.warehouse (default "main") for hold_minutes (default
  # 30); reservation ids are RSV-<order_id>-<line>-<sku>.
  class ReserveInventoryHandler < TaskerWorker::StepHandler
    include OrderReading
    handles "OrderFulfillment::ReserveInventoryHandler"

    def process(task, _sequence, step)
      order = read_order(task.context)
      {
        "order_id" => order.order_id,
        "warehouse" => config_string(step, "warehouse", "main"),
        "hold_minutes" => config_unsigned(step, "hold_minutes", 30),
        "reservations" => order.items.each_with_index.map do |item, index|
          { "sku" => item.sku, "quantity" => item.quantity,
            "reservation_id" => "RSV-#{order.order_id}-#{index + 1}-#{item.sku}" }
        end
      }
    end
  end

  # Charges the order's total through handler_config.gateway (default "sandbox"); the
  # transaction id is derived from the order id and amount, so it is the same on every attempt
  # (an idempotent charge).
  class ProcessPaymentHandler < TaskerWorker::StepHandler
    include OrderReading
    handles "OrderFulfillment::ProcessPaymentHandler"

    def process(task, _sequence, step)
      order = read_order(task.context)
      amount = total_cents(order.items)
      {
        "order_id" => order.order_id,
        "transaction_id" => format("TXN-%016x", fnv1a("#{order.order_id}:#{amount}")),
        "amount_cents" => amount,
        "gateway" => config_string(step, "gateway", "sandbox"),
        "captured" => config_bool(step, "capture", true)
      }
    end
  end

  # Ships the reserved items once paid: needs the reservations of reserve_inventory and the
  # transaction of process_payment.
  class ShipOrderHandler < TaskerWorker::StepHandler
    include OrderReading
    handles "OrderFulfillment::ShipOrderHandler"

    def process(task, sequence, step)
      order = read_order(task.context)
      reservations = sequence["reserve_inventory"].then { |result| result.is_a?(Hash) ? result["reservations"] : nil }
      unless reservations.is_a?(Array)
        raise InvalidOrder, "ship_order needs previous_results.reserve_inventory.reservations"
      end

      transaction_id = sequence["process_payment"].then { |result| result.is_a?(Hash) ? result["transaction_id"] : nil }
      unless transaction_id.is_a?(String)
        raise InvalidOrder, "ship_order needs previous_results.process_payment.transaction_id"
      end

      {
        "order_id" => order.order_id,
        "tracking_number" => format("TRK-%012X", fnv1a("#{order.order_id}:#{transaction_id}") & 0xFFFF_FFFF_FFFF),
        "transaction_id" => transaction_id,
        "reservation_ids" => reservations.filter_map { |r| r["reservation_id"] if r.is_a?(Hash) && r["reservation_id"].is_a?(String) },
        "notifications_sent" => config_bool(step, "send_notifications", true)
      }
    end
  end
end
