# frozen_string_literal: true

require "fileutils"
require "net/http"
require "rbconfig"
require "securerandom"
require "socket"
require "tasker_worker"

module TaskerWorkerTest
  # A real Tasker system for end-to-end tests: the `tasker` binary run as `tasker serve` on free
  # loopback ports with a temporary SQLite database and templates directory, and Ruby worker
  # processes (bin/tasker-worker) connected to it.
  #
  # Every wait polls an observable state (the HTTP API, the tasker.test execution log, a
  # process's exit status) a bounded number of times and fails when the bound is reached; nothing
  # sleeps in the hope that something has happened.
  class LiveTasker
    # Interval between two polls, seconds.
    POLL_INTERVAL = 0.05
    # Upper bound on one wait, seconds; reaching it fails the test.
    GUARD_SECONDS = 90
    # Heartbeats every 200 ms; a worker silent for 5 intervals (1 s) is declared dead.
    HEARTBEAT_INTERVAL_MS = 200
    LIVENESS = 5
    FINISHED_STATES = %w[complete error cancelled resolved_manually].freeze
    EXAMPLE_TEMPLATES = File.join(REPO_ROOT, "examples", "templates")
    WORKER_BIN = File.join(SDK_ROOT, "bin", "tasker-worker")
    WORKER_LIB = File.join(SDK_ROOT, "lib")

    # Raised when the system cannot be started for a reason outside the code under test
    # (no binary): the test skips, or fails under TASKER_REQUIRE_SDKS=1.
    class Unavailable < StandardError; end

    # A process whose output goes to a log file.
    class ChildProcess
      attr_reader :label, :pid, :log

      def initialize(label, command, log:, env:, chdir:)
        @label = label
        @log = log
        @status = nil
        @pid = Process.spawn(env, *command, chdir: chdir, in: File::NULL, out: log, err: %i[child out])
      end

      # The exit status once it exited, else nil.
      def exited
        return @status if @status

        _, status = Process.wait2(@pid, Process::WNOHANG)
        @status = status
      rescue Errno::ECHILD
        @status ||= :gone
      end

      def log_text
        text = File.exist?(@log) ? File.read(@log) : ""
        text.length > 4000 ? text[-4000..] : text
      end

      # SIGKILL, then reap.
      def kill
        return if exited

        Process.kill("KILL", @pid)
        _, @status = Process.wait2(@pid)
      end

      # SIGTERM (a graceful shutdown), waiting at most GUARD_SECONDS; the exit status.
      def stop
        return @status if exited

        Process.kill("TERM", @pid)
        deadline = monotonic + GUARD_SECONDS
        until exited
          if monotonic > deadline
            kill
            raise "#{@label} did not exit after SIGTERM:\n#{log_text}"
          end
          sleep POLL_INTERVAL
        end
        @status
      end

      def monotonic
        Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end
    end

    # A worker process and the id it registers with.
    Worker = Struct.new(:process, :worker_id, keyword_init: true)

    # One line of the execution log: "<task_id> <step_name> <step_id> <attempt> <worker_id>".
    Execution = Struct.new(:task_id, :step_name, :step_id, :attempt, :worker_id, keyword_init: true)

    # The tasker binary: $TASKER_BIN, else target/debug/tasker of this checkout. Raises
    # Unavailable without one.
    def self.binary
      configured = ENV.fetch("TASKER_BIN", "")
      unless configured.empty?
        raise Unavailable, "TASKER_BIN=#{configured} is not an executable file" unless File.executable?(configured)

        return configured
      end
      path = File.join(REPO_ROOT, "target", "debug", "tasker")
      return path if File.executable?(path)

      raise Unavailable, "no tasker binary: TASKER_BIN is unset and #{path} does not exist " \
                         "(run `cargo build -p tasker-cli`, or scripts/test.sh which sets TASKER_BIN)"
    end

    def self.free_port
      server = TCPServer.new("127.0.0.1", 0)
      server.addr[1]
    ensure
      server&.close
    end

    # Calls the block every POLL_INTERVAL until it returns a truthy value, and returns it; raises
    # Minitest::Assertion (a test failure) after `guard` seconds.
    def self.wait_until(what, guard: GUARD_SECONDS)
      (guard / POLL_INTERVAL).ceil.times do
        value = yield
        return value if value

        sleep POLL_INTERVAL
      end
      raise Minitest::Assertion, "timed out after #{guard} s waiting for #{what}"
    end

    attr_reader :endpoint, :base_url, :client, :execution_log, :workers, :directory

    # Starts `tasker serve` in `directory` with copies of `templates` and waits until /health
    # answers.
    def initialize(directory, templates: Dir[File.join(EXAMPLE_TEMPLATES, "*.yaml")])
      @binary = self.class.binary
      @directory = directory
      templates_dir = File.join(directory, "templates")
      FileUtils.mkdir_p(templates_dir)
      FileUtils.cp(templates, templates_dir)
      @execution_log = File.join(directory, "executions.log")
      @endpoint = "tcp://127.0.0.1:#{self.class.free_port}"
      http_port = self.class.free_port
      @base_url = "http://127.0.0.1:#{http_port}"
      @workers = []
      @generation = 1
      @serve = start_serve(
        [@binary, "serve", "--database-url", "sqlite:#{File.join(directory, 'tasker.db')}",
         "--endpoint", @endpoint, "--http-addr", "127.0.0.1:#{http_port}", "--templates", templates_dir,
         "--heartbeat-interval-ms", HEARTBEAT_INTERVAL_MS.to_s, "--liveness", LIVENESS.to_s,
         "--poll-interval-ms", "500", "--orchestrator-id", "orchestrator-ruby-e2e"]
      )
      @client = TaskerWorker::Client.new(@base_url)
      wait_healthy
    end

    # SIGKILLs `tasker serve` and starts it again with the same database, ports and templates;
    # waits until it is healthy.
    def restart
      @serve.kill
      @generation += 1
      @serve = start_serve(@serve_command)
      wait_healthy
    end

    # `ruby -Ilib bin/tasker-worker --require FILE...` with the given handler files.
    def start_ruby_worker(label, requires, capacity: 10)
      worker_id = "ruby-#{label}-#{SecureRandom.hex(4)}"
      command = [RbConfig.ruby, "-I#{WORKER_LIB}", WORKER_BIN, "--connect", @endpoint, "--worker-id", worker_id,
                 "--capacity", capacity.to_s, "--shutdown-grace", "2"]
      requires.each { |file| command.push("--require", file) }
      process = ChildProcess.new("ruby worker #{worker_id}", command, log: File.join(@directory, "#{worker_id}.log"),
                                                                      env: child_env("TASKER_TEST_EXECUTION_LOG" => @execution_log),
                                                                      chdir: REPO_ROOT)
      Worker.new(process: process, worker_id: worker_id).tap { |worker| @workers << worker }
    end

    # Polls GET /v1/tasks/{id} until each task is finished; the tasks, in order.
    def wait_finished(task_ids)
      task_ids.map do |task_id|
        self.class.wait_until("task #{task_id} to finish\n#{diagnostics}") do
          raise Minitest::Assertion, "tasker serve exited:\n#{@serve.log_text}" if @serve.exited

          task = @client.get_task(task_id)
          task if FINISHED_STATES.include?(task["state"])
        end
      end
    end

    # Every line of the execution log so far.
    def executions
      return [] unless File.exist?(@execution_log)

      File.readlines(@execution_log, chomp: true).reject(&:empty?).map do |line|
        parts = line.split(" ")
        raise "bad execution log line #{line.inspect}" unless parts.size == 5

        Execution.new(task_id: Integer(parts[0]), step_name: parts[1], step_id: Integer(parts[2]),
                      attempt: Integer(parts[3]), worker_id: parts[4])
      end
    end

    # The tail of every process's log, for failure messages.
    def diagnostics
      ([@serve] + @workers.map(&:process)).map { |process| "--- #{process.label}:\n#{process.log_text}" }.join("\n")
    end

    # Stops every worker (SIGTERM), then the orchestrator.
    def close
      @workers.each { |worker| worker.process.stop }
      @serve.stop
    end

    private

    def start_serve(command)
      @serve_command = command
      ChildProcess.new("tasker serve (run #{@generation})", command,
                       log: File.join(@directory, "serve-#{@generation}.log"),
                       env: child_env("RUST_LOG" => "info"), chdir: @directory)
    end

    # This process's environment minus TASKER_* settings and RUST_LOG (a developer's
    # configuration must not change what the test starts), plus `extra`.
    def child_env(extra)
      removed = ENV.keys.select { |key| key.start_with?("TASKER_") || key == "RUST_LOG" }.to_h { |key| [key, nil] }
      removed.merge(extra)
    end

    def wait_healthy
      self.class.wait_until("tasker serve to answer #{@base_url}/health") do
        raise Minitest::Assertion, "tasker serve exited before it was healthy:\n#{@serve.log_text}" if @serve.exited

        begin
          Net::HTTP.get_response(URI("#{@base_url}/health")).is_a?(Net::HTTPSuccess)
        rescue SystemCallError, IOError, Net::OpenTimeout, Net::ReadTimeout
          false
        end
      end
    end
  end
end
