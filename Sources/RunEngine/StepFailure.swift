import Core

/// Why a step failed, as its `error_message` says it. The run fails with it and
/// can be retried once the cause is fixed.
enum StepFailure: Error, CustomStringConvertible {
    case noPrompt(step: String)
    case unknownVariable(String)
    case noModel(String)
    case provider(String)
    case storage(String)
    case unreadableOutput(step: String, why: String)
    /// The database refused the step's result (a value it cannot hold, such
    /// as U+0000 in a summary): run again, it would be refused again.
    case unrecordable(String)

    var description: String {
        switch self {
        case .noPrompt(let step):
            "step \(step) has no active prompt (PUT /v1/prompts/\(step))"
        case .unknownVariable(let name):
            "the prompt uses {{\(name)}}, which is neither a field of the run's input nor an earlier step"
        case .noModel(let why):
            "no model for this step: \(why)"
        case .provider(let why):
            "the provider call failed: \(why)"
        case .storage(let why):
            "the output could not be stored: \(why)"
        case .unreadableOutput(let step, let why):
            "the output of step \(step) cannot be read back: \(why)"
        case .unrecordable(let why):
            "the step's result could not be recorded: \(why)"
        }
    }
}
