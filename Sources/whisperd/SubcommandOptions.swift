extension Whisperd {
    /// ArgumentParser gives the root command's options (`whisperd --roster`, `--profile`, …)
    /// the values written after a subcommand that has options of the same name, so the
    /// subcommand reads them here: every value of `option` between `subcommand` and `--`.
    static func valuesTakenByTheRoot(after subcommand: String, _ option: String, _ arguments: [String]) -> [String] {
        guard let start = arguments.firstIndex(of: subcommand) else { return [] }
        var values: [String] = []
        var index = start + 1
        while index < arguments.count, arguments[index] != "--" {
            let argument = arguments[index]
            if argument == option, index + 1 < arguments.count {
                values.append(arguments[index + 1])
                index += 1
            } else if argument.hasPrefix(option + "=") {
                values.append(String(argument.dropFirst(option.count + 1)))
            }
            index += 1
        }
        return values
    }
}
