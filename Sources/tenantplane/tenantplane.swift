// The tenantplane executable: the CLI module's root command as the entry point.
import ArgumentParser
import CLI

@main
extension Tenantplane {}
