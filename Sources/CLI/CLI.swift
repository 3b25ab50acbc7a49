// CLI: the operator's commands (swift-argument-parser). Each command is a thin
// shell over the library modules: parse, call, print (text or --json), and turn
// a failure into one line on stderr and a non-zero exit.
