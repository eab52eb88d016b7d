import Foundation
import Glibc
import WhisperConfig
import WhisperSystem

/// Prepares directories and the single-instance lock, then runs the ``Daemon``.
public enum DaemonLauncher {
    public static func launch(_ configuration: DaemonConfiguration, loaded: LoadedRoster) throws -> Int32 {
        let log = DaemonLog()
        ProcessSpawner.reserveDescriptorSlots()
        // Block the signals before any thread exists, so every thread inherits the mask and
        // they arrive only through the signalfd.
        let signals = try SignalSource(signals: [SIGTERM, SIGINT, SIGHUP, SIGQUIT])
        let nofile = raiseFileLimit()
        for directory in [
            configuration.stateDirectory, configuration.runtimeDirectory, configuration.runtimeDirectory + "/notify",
            configuration.logDirectory,
        ] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
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
        let daemon = try Daemon(configuration: configuration, loaded: loaded, log: log, nofileSoftLimit: nofile)
        return try daemon.run(signals: signals)
    }
}
