import Foundation
import Glibc
import WhisperConfig
import WhisperCore
import WhisperSystem

/// Prepares directories and the single-instance lock, then runs the ``Daemon``.
public enum DaemonLauncher {
    public static func launch(_ configuration: DaemonConfiguration, loaded: LoadedRoster) throws -> Int32 {
        // whisperd's own lines go native only when stderr is the journal anyway (no doubles).
        let log = DaemonLog(writesToJournal: configuration.journal && Journal.standardErrorIsJournal())
        // Blocked in every thread since main (HandledSignals): they arrive only through the signalfd.
        let signals = try SignalSource(.supervisor)
        let nofile = raiseFileLimit()
        // Before any other thread exists: a table grown later makes the loop wait (the function says why).
        reserveDescriptorTable(count: 64 + descriptorsPerService * loaded.roster.services.count)
        for directory in [
            configuration.stateDirectory, configuration.runtimeDirectory, configuration.runtimeDirectory + "/notify",
            configuration.logDirectory,
        ] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            // whisperd writes here as root: nobody else may have put or be able to put anything here.
            do { try TenantFiles.checkOwnDirectory(directory) } catch {
                log.log(.error, "whisperd", "refusing to start: \(error)")
                return 1
            }
        }
        if geteuid() == 0 {
            // Characters run as users of their own: they pass through the state and runtime
            // directories to their own (search only, no listing); the logs are whisperd's alone.
            for directory in [configuration.stateDirectory, configuration.runtimeDirectory, configuration.runtimeDirectory + "/notify"] {
                var info = stat()
                if stat(directory, &info) == 0, info.st_mode & 0o001 == 0 { chmod(directory, (info.st_mode & 0o7777) | 0o711) }
            }
            var info = stat()
            if stat(configuration.logDirectory, &info) == 0, info.st_mode & 0o007 != 0 {
                chmod(configuration.logDirectory, info.st_mode & 0o7770)
            }
        } else {
            log.log(
                .warning, "whisperd",
                "not root: every character runs as whisperd's own user (uid \(geteuid())); user:/group: are not applied")
        }
        // Two supervisors on one runtime dir would start every bot twice.
        let lockPath = configuration.runtimeDirectory + "/whisperd.lock"
        let lockFD = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lockFD >= 0 else { throw SystemError("open \(lockPath)") }
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            log.log(.error, "whisperd", "another whisperd already runs with \(configuration.runtimeDirectory) (lock \(lockPath))")
            return 1
        }
        ftruncate(lockFD, 0)
        _ = "\(getpid())\n".withCString { write(lockFD, $0, strlen($0)) }
        defer { close(lockFD) }
        let cgroups: CgroupBackend
        do {
            cgroups = try CgroupBackend.detect(
                mode: configuration.cgroupMode, basePath: configuration.cgroupBase, layout: CgroupLayout.current())
        } catch {
            log.log(.error, "whisperd", "\(error)")
            return 1
        }
        defer { cgroups.finish() }
        report(cgroups, log: log)
        let coverage = SandboxCoverage(abi: LandlockRuleset.abi, filesystem: .default)
        if coverage.missing.isEmpty {
            log.log(.info, "whisperd", "sandbox: Landlock ABI \(LandlockRuleset.abi): filesystem, TCP bind, signal and socket scoping enforced")
        } else {
            log.log(.warning, "whisperd", "WARNING: sandbox: NOT enforced on this kernel: \(coverage.missing.joined(separator: "; "))")
        }
        if configuration.journal {
            log.log(
                Journal.isRunning ? .info : .warning, "whisperd",
                Journal.isRunning
                    ? "characters' output also goes to the journal (journalctl CHARACTER=<name>)"
                    : "--journal: no journal is running (/run/systemd/journal/socket missing); log files only")
        }
        // Started by a re-exec: the previous whisperd's running processes are handed over. A
        // handover that cannot be read leaves them to the leftover rule below (stopped, started
        // again): never two of one character.
        var handover: Handover?
        if let path = configuration.handoverPath {
            do {
                handover = try Handover.take(from: path)
                cgroups.adoptCreatedBases(handover?.createdCgroupBases ?? [])
            } catch {
                log.log(.error, "whisperd", "re-exec: cannot take over the running characters (\(error)); they are restarted")
            }
        }
        // A previous whisperd that died left its characters running: stop them before anything
        // starts, so no character ever runs twice (two bots on one Discord token).
        for leftover in cgroups.clearLeftovers(keeping: Set(handover?.services.map(\.name) ?? [])) {
            let message =
                "killed \(leftover.pids.count) process(es) left running by a previous whisperd (pids "
                    + leftover.pids.map(String.init).joined(separator: ", ") + ")"
            if let name = ServiceName(leftover.name) {
                log.log(.warning, character: name, message)
            } else {
                log.log(.warning, leftover.name, message)
            }
        }
        let daemon = try Daemon(
            configuration: configuration, loaded: loaded, log: log, nofileSoftLimit: nofile, cgroups: cgroups, handover: handover)
        return try daemon.run(signals: signals)
    }

    /// A character's descriptors in whisperd: its notify socket, pidfd, output pipes (both ends
    /// while it runs), cgroup directory and event files, OOM eventfd, peak file and log file.
    static let descriptorsPerService = 16

    private static func report(_ cgroups: CgroupBackend, log: DaemonLog) {
        log.log(.info, "whisperd", cgroups.summary)
        for note in cgroups.notes { log.log(.info, "whisperd", "cgroups: \(note)") }
        if cgroups.grouping == nil {
            log.log(
                .warning, "whisperd",
                "WARNING: no cgroup backend: characters are grouped by process group only, and memory/cpus/pids limits "
                    + "are NOT enforced (memory falls back to RLIMIT_DATA, which bounds the heap only)")
        } else if !cgroups.notEnforced.isEmpty {
            log.log(
                .warning, "whisperd",
                "WARNING: these limits are NOT enforced on this host: \(cgroups.notEnforced.joined(separator: ", "))")
        }
    }
}
