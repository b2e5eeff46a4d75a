// Why a sampled step (a child of an expansion) ended: one enum for the engine that decodes
// it, the wire that carries it (its values are the schema's ChildFinish ordinals) and the
// search tree that keeps it.
#pragma once

#include <cstdint>

namespace canopy {

enum class FinishReason : int32_t {
  kStop = 0,       // a stop string ("\n\n" between steps)
  kEndOfTurn = 1,  // the model's end-of-turn token: the solution is complete
  kLength = 2,     // the step's token budget, or the context / KV pool ran out
};

// "stop", "end_of_turn", "length".
inline const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kEndOfTurn: return "end_of_turn";
    case FinishReason::kLength: return "length";
  }
  return "?";
}

}  // namespace canopy
