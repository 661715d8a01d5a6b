# frozen_string_literal: true

require "optparse"
require "logger"
require_relative "../tasker_worker"

module TaskerWorker
  # The `tasker-worker` executable: loads handler files (which register their handler classes
  # with `StepHandler.handles`) and runs a Worker until SIGTERM or SIGINT.
  #
  #   tasker-worker --connect tcp://127.0.0.1:5555 --require handlers/orders.rb [--require more.rb ...]
  #
  # Exit status: 0 after a graceful shutdown, 1 when the orchestrator rejects the worker, 2 for a
  # usage or configuration error (unknown option, missing --connect, a file that fails to load,
  # no handlers registered).
  class CLI
    USAGE = "Usage: tasker-worker --connect ENDPOINT --require FILE [--require FILE ...] [options]"

    def initialize(out: $stdout, err: $stderr)
      @out = out
      @err = err
    end

    # Runs the command line `argv`; returns the exit status.
    def run(argv)
      options = parse(argv.dup)
      return 0 if options.nil?

      load_handlers(options[:files])
      Worker.new(**options[:worker]).run
      0
    rescue OptionParser::ParseError, ConfigurationError => e
      @err.puts("tasker-worker: #{e.message}")
      @err.puts(USAGE)
      2
    rescue HandlerLoadError => e
      @err.puts("tasker-worker: #{e.message}")
      2
    rescue HelloRejected => e
      @err.puts("tasker-worker: #{e.message}")
      1
    end

    # A handler file failed to load.
    class HandlerLoadError < Error; end

    private

    def load_handlers(files)
      files.each do |file|
        require File.expand_path(file)
      rescue LoadError, SyntaxError, StandardError => e
        raise HandlerLoadError, "cannot load #{file}: #{e.class}: #{e.message}"
      end
    end

    # The options, or nil when --help or --version was answered.
    def parse(argv)
      files = []
      worker = { logger: Logger.new(@err, progname: "tasker-worker", level: Logger::INFO) }
      parser = OptionParser.new do |opts|
        opts.banner = USAGE
        opts.separator ""
        opts.on("-c", "--connect ENDPOINT", "The orchestrator's worker endpoint, e.g. tcp://127.0.0.1:5555") do |value|
          worker[:endpoint] = value
        end
        opts.on("-r", "--require FILE", "Load a file of step handlers (repeatable)") { |value| files << value }
        opts.on("--capacity N", Integer, "Most steps run at once (default #{Worker::DEFAULT_CAPACITY})") do |value|
          worker[:capacity] = value
        end
        opts.on("--name NAME", "Display name for dashboards and logs") { |value| worker[:name] = value }
        opts.on("--worker-id ID", "This process's worker id (default <host>-<pid>-<random>)") do |value|
          worker[:worker_id] = value
        end
        opts.on("--heartbeat-interval SECONDS", Float, "Heartbeat interval to ask for (0.1-60)") do |value|
          worker[:heartbeat_interval] = value
        end
        opts.on("--shutdown-grace SECONDS", Float,
                "How long running steps may finish after SIGTERM (default #{Worker::DEFAULT_SHUTDOWN_GRACE})") do |value|
          worker[:shutdown_grace] = value
        end
        opts.on("--[no-]interrupt-handlers",
                "Stop timed-out or cancelled steps with Thread#raise (default) or only flag them") do |value|
          worker[:interrupt_handlers] = value
        end
        opts.on("--log-level LEVEL", %w[debug info warn error], "debug, info (default), warn or error") do |value|
          worker[:logger].level = Logger.const_get(value.upcase)
        end
        opts.on("-v", "--version", "Print the SDK and protocol versions") do
          @out.puts("tasker-worker #{VERSION} (protocol #{Protocol::VERSION}, ruby #{RUBY_VERSION})")
          return nil
        end
        opts.on("-h", "--help", "Show this help") do
          @out.puts(opts)
          return nil
        end
      end
      files.concat(parser.parse(argv))
      raise OptionParser::MissingArgument, "--connect ENDPOINT is required" unless worker[:endpoint]
      raise OptionParser::MissingArgument, "--require FILE is required (the handlers to run)" if files.empty?

      { files: files, worker: worker }
    end
  end
end
