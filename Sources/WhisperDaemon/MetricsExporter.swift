import Foundation
import Glibc
import Prometheus
import WhisperCore
import WhisperSystem

/// `GET /metrics`: swift-prometheus' registry, brought up to date from the supervisor's state
/// at each scrape (the core keeps totals; counters here advance by the difference).
///
/// @unchecked Sendable: renderings may run on a helper thread while the loop records a time
/// to ready; every method takes `lock` before touching `characters` or any series' state.
final class MetricsExporter: @unchecked Sendable {
    private let lock = NSLock()
    let registry = PrometheusCollectorRegistry()
    private var characters: [ServiceName: CharacterMetrics] = [:]
    private let process: ProcessMetrics

    init(version: String) {
        process = ProcessMetrics(registry: registry)
        registry.makeGauge(
            descriptor: descriptor("build", "info", "whisperd's version (the value is always 1)"), labels: [("version", version)]
        ).set(to: 1)
    }

    /// Numbers a counter whose total is kept elsewhere: the Prometheus counter advances by the
    /// difference since the last scrape.
    final class MirroredCounter {
        let counter: Counter
        private var last: Double = 0

        init(_ counter: Counter) { self.counter = counter }

        func update(to total: Double) {
            if total < last {
                counter.reset()
                last = 0
            }
            if total > last { counter.increment(by: total - last) }
            last = total
        }
    }

    /// One character's series, made once.
    final class CharacterMetrics {
        let labels: [(String, String)]
        let registry: PrometheusCollectorRegistry
        let up, ready, memory, memoryLimit, memoryPeak, pids: Gauge
        let cpu, oomKills, logLinesDropped, notifyRejected, notifyMalformed: MirroredCounter
        var restarts: [String: MirroredCounter] = [:]
        var state: (name: String, gauge: Gauge)?
        let timeToReady: ValueHistogram

        init(_ name: ServiceName, registry: PrometheusCollectorRegistry) {
            self.registry = registry
            labels = [("character", name.rawValue)]
            func gauge(_ metric: String, _ unit: String, _ help: String) -> Gauge {
                registry.makeGauge(descriptor: descriptor("character_" + metric, unit, help), labels: [("character", name.rawValue)])
            }
            func counter(_ metric: String, _ unit: String, _ help: String) -> MirroredCounter {
                MirroredCounter(
                    registry.makeCounter(descriptor: descriptor("character_" + metric, unit, help), labels: [("character", name.rawValue)]))
            }
            up = gauge("up", "", "1 while the character has a running process")
            ready = gauge("ready", "", "1 while the character is ready (health)")
            memory = gauge("memory", "bytes", "Memory used by the character's cgroup")
            memoryLimit = gauge("memory_limit", "bytes", "The character's memory limit (0: none)")
            memoryPeak = gauge("memory_peak", "bytes", "Peak memory of the character's cgroup in this run")
            pids = gauge("pids", "", "Tasks (or processes) in the character's cgroup")
            cpu = counter("cpu", "seconds_total", "CPU time used by the character's cgroup")
            oomKills = counter("oom_kills", "total", "Processes of the character killed by the kernel's OOM killer")
            logLinesDropped = counter("log_lines_dropped", "total", "Output lines dropped (the log writer fell behind, or the disk refused them)")
            notifyRejected = counter("notify_rejected", "total", "Notify datagrams rejected (sender not in the character)")
            notifyMalformed = counter("notify_malformed", "total", "Notify datagrams that could not be parsed")
            timeToReady = registry.makeValueHistogram(
                descriptor: descriptor("character_time_to_ready", "seconds", "Time from spawn to ready"),
                labels: [("character", name.rawValue)], buckets: [0.01, 0.05, 0.25, 1, 5, 30, 120])
        }

        func restartCounter(_ reason: String) -> MirroredCounter {
            if let existing = restarts[reason] { return existing }
            let counter = MirroredCounter(
                registry.makeCounter(
                    descriptor: descriptor("character_restarts", "total", "Restarts, by the reason the previous run ended"),
                    labels: labels + [("reason", reason)]))
            restarts[reason] = counter
            return counter
        }

        /// Made when the worker first reports them (a character without an LLM has none).
        private var llmTokensSeries: MirroredCounter?
        private var llmBudgetSeries: Gauge?

        func llmTokens() -> MirroredCounter {
            if let existing = llmTokensSeries { return existing }
            let made = MirroredCounter(
                registry.makeCounter(
                    descriptor: descriptor("llm_tokens", "total", "LLM tokens the character's worker spent (reported by the LLM, else estimated)"),
                    labels: labels))
            llmTokensSeries = made
            return made
        }

        /// Made for scheduled jobs only.
        private var scheduleSeries: (next: Gauge, last: Gauge, success: Gauge, skipped: MirroredCounter)?

        func schedule() -> (next: Gauge, last: Gauge, success: Gauge, skipped: MirroredCounter) {
            if let existing = scheduleSeries { return existing }
            func gauge(_ metric: String, _ unit: String, _ help: String) -> Gauge {
                registry.makeGauge(descriptor: descriptor(metric, unit, help), labels: labels)
            }
            let made = (
                next: gauge("job_next_run", "timestamp_seconds", "When the scheduled job runs next (Unix time)"),
                last: gauge("job_last_run", "timestamp_seconds", "When the job's last run started (Unix time; 0: never)"),
                success: gauge("job_last_run_success", "", "1 when the job's last finished run succeeded"),
                skipped: MirroredCounter(
                    registry.makeCounter(
                        descriptor: descriptor("job_skipped_runs", "total", "Scheduled runs skipped because the last run was still going"),
                        labels: labels))
            )
            scheduleSeries = made
            return made
        }

        func llmBudgetRemaining() -> Gauge {
            if let existing = llmBudgetSeries { return existing }
            let made = registry.makeGauge(
                descriptor: descriptor("llm_budget_remaining", "tokens", "Tokens left in the character's LLM_TOKEN_BUDGET window"),
                labels: labels)
            llmBudgetSeries = made
            return made
        }

        /// The state as one series with value 1 (the previous state's series is removed).
        func setState(_ value: String) {
            guard state?.name != value else { return }
            if let old = state?.gauge { registry.unregisterGauge(old) }
            let gauge = registry.makeGauge(
                descriptor: descriptor("character_state", "", "The character's lifecycle state (value 1, label state)"),
                labels: labels + [("state", value)])
            gauge.set(to: 1)
            state = (value, gauge)
        }

        func unregister() {
            for gauge in [up, ready, memory, memoryLimit, memoryPeak, pids] { registry.unregisterGauge(gauge) }
            if let gauge = state?.gauge { registry.unregisterGauge(gauge) }
            for counter in [cpu, oomKills, logLinesDropped, notifyRejected, notifyMalformed] + Array(restarts.values) {
                registry.unregisterCounter(counter.counter)
            }
            registry.unregisterValueHistogram(timeToReady)
            if let tokens = llmTokensSeries { registry.unregisterCounter(tokens.counter) }
            if let budget = llmBudgetSeries { registry.unregisterGauge(budget) }
            if let schedule = scheduleSeries {
                for gauge in [schedule.next, schedule.last, schedule.success] { registry.unregisterGauge(gauge) }
                registry.unregisterCounter(schedule.skipped.counter)
            }
        }
    }

    private func metrics(_ name: ServiceName) -> CharacterMetrics {
        if let existing = characters[name] { return existing }
        let created = CharacterMetrics(name, registry: registry)
        characters[name] = created
        return created
    }

    func recordTimeToReady(_ name: ServiceName, seconds: Double) {
        lock.withLock { metrics(name).timeToReady.record(seconds) }
    }

    func forget(_ name: ServiceName) {
        lock.withLock { characters.removeValue(forKey: name)?.unregister() }
    }

    struct Snapshot: Sendable {
        var status: ServiceStatus
        var limits: Limits?
        var usage: CgroupUsage?
        var logLinesDropped: Int
        var notifyRejected: Int
        var notifyMalformed: Int
        /// A scheduled job's next run, last run start (Unix seconds) and whether the last run succeeded.
        var schedule: (next: Int64?, lastRun: Int64?, lastSucceeded: Bool?)? = nil
    }

    func render(_ snapshots: [Snapshot]) -> [UInt8] {
        lock.withLock { renderLocked(snapshots) }
    }

    private func renderLocked(_ snapshots: [Snapshot]) -> [UInt8] {
        for snapshot in snapshots {
            let status = snapshot.status
            let series = metrics(status.name)
            series.up.set(to: status.pid == nil ? 0 : 1)
            series.ready.set(to: status.isReady ? 1 : 0)
            series.setState(status.state.rawValue)
            for (reason, count) in status.restartsByReason { series.restartCounter(reason).update(to: Double(count)) }
            series.oomKills.update(to: Double(status.oomKills))
            series.memoryLimit.set(to: Double(snapshot.limits?.memoryBytes ?? 0))
            if let usage = snapshot.usage {
                series.memory.set(to: Double(usage.memoryBytes ?? 0))
                series.memoryPeak.set(to: Double(usage.memoryPeakBytes ?? 0))
                series.pids.set(to: Double(usage.pids ?? 0))
                if let cpu = usage.cpuMicroseconds { series.cpu.update(to: Double(cpu) / 1e6) }
            } else {
                series.memory.set(to: 0)
                series.pids.set(to: 0)
            }
            series.logLinesDropped.update(to: Double(snapshot.logLinesDropped))
            series.notifyRejected.update(to: Double(snapshot.notifyRejected))
            series.notifyMalformed.update(to: Double(snapshot.notifyMalformed))
            if let tokens = status.llmTokens { series.llmTokens().update(to: Double(tokens)) }
            if let remaining = status.llmBudgetRemaining { series.llmBudgetRemaining().set(to: Double(remaining)) }
            if let schedule = snapshot.schedule {
                let jobSeries = series.schedule()
                jobSeries.next.set(to: Double(schedule.next ?? 0))
                jobSeries.last.set(to: Double(schedule.lastRun ?? 0))
                if let succeeded = schedule.lastSucceeded { jobSeries.success.set(to: succeeded ? 1 : 0) }
                jobSeries.skipped.update(to: Double(status.skippedScheduledRuns))
            }
        }
        process.update()
        return registry.emitToBuffer()
    }
}

/// The standard `process_*` metrics of the exporting process itself, from /proc/self.
final class ProcessMetrics {
    let cpu: MetricsExporter.MirroredCounter
    let residentMemory, virtualMemory, openFDs, maxFDs, startTime: Gauge

    init(registry: PrometheusCollectorRegistry) {
        func gauge(_ name: String, _ unit: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "process", metricName: name, unitName: unit, helpText: help))
        }
        cpu = MetricsExporter.MirroredCounter(
            registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    namespace: "process", metricName: "cpu", unitName: "seconds_total", helpText: "User and system CPU time spent")))
        residentMemory = gauge("resident_memory", "bytes", "Resident memory size")
        virtualMemory = gauge("virtual_memory", "bytes", "Virtual memory size")
        openFDs = gauge("open_fds", "", "Open file descriptors")
        maxFDs = gauge("max_fds", "", "The soft limit on open file descriptors")
        startTime = gauge("start_time", "seconds", "Start time of the process since the Unix epoch")
    }

    func update() {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        if let stat = readSmallFile("/proc/self/stat"), let close = stat.lastIndex(of: ")") {
            // Fields after the command: state is [0]; utime [11], stime [12], starttime [19], vsize [20], rss [21].
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 21 {
                cpu.update(to: ((Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)) / ticks)
                virtualMemory.set(to: Double(fields[20]) ?? 0)
                residentMemory.set(to: (Double(fields[21]) ?? 0) * pageSize)
                if let uptime = readSmallFile("/proc/uptime")?.split(separator: " ").first.flatMap({ Double($0) }) {
                    let now = Double(Clock.realtimeNanoseconds()) / 1e9
                    startTime.set(to: now - uptime + (Double(fields[19]) ?? 0) / ticks)
                }
            }
        }
        var count = 0
        if let directory = opendir("/proc/self/fd") {
            while readdir(directory) != nil { count += 1 }
            closedir(directory)
        }
        openFDs.set(to: Double(max(0, count - 3)))  // ".", "..", and the directory's own descriptor
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { maxFDs.set(to: Double(limit.rlim_cur)) }
    }
}

private func descriptor(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
    MetricNameDescriptor(namespace: "whisperd", metricName: metric, unitName: unit, helpText: help)
}
