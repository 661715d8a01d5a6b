# frozen_string_literal: true

module TaskerWorker
  # Step handlers by `handler_class`: the names a worker announces in `hello` and routes steps by.
  #
  #   registry = TaskerWorker::Registry.new
  #   registry.register("Billing::ChargeHandler", ChargeHandler)   # a StepHandler subclass
  #   registry.register(ShipOrderHandler)                          # its `handles` names, or its class name
  #   registry.register("billing.refund") { |task, sequence, step| { "refunded" => true } }
  #
  # A class is instantiated (with no arguments) for every step attempt; any other object that
  # responds to `process(task, sequence, step)` (a block, a lambda, a shared instance) is called
  # as it is, from several threads at once, and must be thread-safe.
  class Registry
    def initialize
      @handlers = {}
      @mutex = Mutex.new
    end

    # Registers a handler; see the class documentation for the accepted forms. Registering a
    # name again replaces its handler. Returns self.
    def register(handler_class = nil, handler = nil, &block)
      if handler.nil? && block.nil? && handler_class.is_a?(Module)
        handler = handler_class
        names = handler.respond_to?(:handled_classes) ? handler.handled_classes : []
        names = [handler.name] if names.empty?
        names.each { |name| register(name, handler) }
        return self
      end
      handler ||= block
      raise ArgumentError, "register needs a handler class, an object with process, or a block" if handler.nil?

      check_name(handler_class)
      check_handler(handler_class, handler)
      @mutex.synchronize { @handlers[handler_class] = handler }
      self
    end

    # The registered handler classes, sorted: what a worker announces.
    def handler_classes
      @mutex.synchronize { @handlers.keys.sort }
    end

    # Whether a handler is registered for `handler_class`.
    def key?(handler_class)
      @mutex.synchronize { @handlers.key?(handler_class) }
    end
    alias handles? key?

    # The registered handler (class or object) for `handler_class`, or nil.
    def [](handler_class)
      @mutex.synchronize { @handlers[handler_class] }
    end

    # What runs one attempt of a `handler_class` step: a new instance for a class, the object
    # itself otherwise. Raises KeyError for an unknown class.
    def handler_for(handler_class)
      handler = self[handler_class] or raise KeyError, "no handler registered for #{handler_class.inspect}"
      handler.is_a?(Class) ? handler.new : handler
    end

    def size
      @mutex.synchronize { @handlers.size }
    end

    def empty?
      size.zero?
    end

    private

    def check_name(name)
      unless name.is_a?(String) && !name.empty? && name.bytesize <= Protocol::MAX_NAME_BYTES && name.valid_encoding?
        raise ConfigurationError,
              "a handler_class must be a non-empty UTF-8 string of at most #{Protocol::MAX_NAME_BYTES} bytes, " \
              "not #{name.inspect}"
      end
    end

    def check_handler(name, handler)
      callable = handler.is_a?(Class) ? handler.method_defined?(:process) : handler.respond_to?(:process)
      callable ||= handler.respond_to?(:call) && !handler.is_a?(Class)
      return if callable

      raise ConfigurationError, "the handler for #{name.inspect} must respond to process(task, sequence, step)"
    end
  end

  @registry = Registry.new

  class << self
    # The global registry that `StepHandler.handles` fills and a Worker uses by default.
    attr_reader :registry
  end
end
