# A checkpoint of one problem's search: the whole state of its strategy
# (search/strategy_state.h mirrors it field by field; coordinator/checkpoint.cc converts)
# and what the coordinator needs to go on with it. One message per file under
# OUT/checkpoints/, behind a header with a version and a checksum (coordinator/checkpoint.h).
#
# Compatibility: ordinals are fixed forever; a change an older reader would misread bumps
# checkpointVersion (== StrategyState::kVersion), and a checkpoint of another version is
# refused (its problem starts again from its root).

@0xc8b74b715b1174ed;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("canopy::ckpt");

const checkpointVersion :UInt32 = 1;

enum Finish { stop @0; endOfTurn @1; length @2; }
enum Stop { none @0; finished @1; tokens @2; expansions @3; depth @4; seconds @5; jobBudget @6; error @7; }

# A tree node; its id is its index, depth, children and path score are derived.
struct Node {
  parent @0 :Int32;
  text @1 :Text;
  tokens @2 :Int32;
  end @3 :Finish;
  sumLogprob @4 :Float64;
  stepScores @5 :List(Float64);
  tokenIds @6 :List(Int32);
  steps @7 :List(Text);         # empty: the one step is `text` (SearchNode::steps)
  terminal @8 :Bool;
  truncated @9 :Bool;
  pending @10 :Bool;
  released @11 :Bool;
  numExpansions @12 :Int32;
  visits @13 :Int32;
  valueSum @14 :Float64;
  prior @15 :Float64;
  expansion @16 :UInt64;
  sample @17 :Int32;
  waits @18 :Int32;             # budget forcing
  cued @19 :Bool;
}

struct Expansion {
  id @0 :UInt64;
  node @1 :Int32;
  numChildren @2 :Int32;
  maxTokens @3 :Int32;
  fullSolution @4 :Bool;
  seed @5 :UInt64;
  firstSample @6 :Int32;
}

struct Child {
  text @0 :Text;
  tokens @1 :Int32;
  end @2 :Finish;
  sumLogprob @3 :Float64;
  stepScores @4 :List(Float64);
  tokenIds @5 :List(Int32);
  steps @6 :List(Text);
  waits @7 :Int32;
  cued @8 :Bool;
}

struct Outcome {
  expansion @0 :UInt64;
  children @1 :List(Child);
}

struct Subtree {
  current @0 :Int32;
  done @1 :Bool;
  pending @2 :Bool;
}

struct SubtreeOf {
  expansion @0 :UInt64;
  subtree @1 :Int32;
}

struct Checkpoint {
  version @0 :UInt32;
  problemId @1 :Text;
  secondsSpent @2 :Float64;       # the problem's search time before this checkpoint

  kind @3 :Text;
  optionsDigest @4 :UInt64;
  nodes @5 :List(Node);
  stop @6 :Stop;
  started @7 :Bool;
  nextId @8 :UInt64;
  nextApply @9 :UInt64;
  outstanding @10 :List(Expansion);
  buffered @11 :List(Outcome);
  tokensUsed @12 :Int64;
  tokensReserved @13 :Int64;
  expansionsPlanned @14 :Int32;

  rootPlanned @15 :Bool;          # best-of-N, DVTS
  beamRound @16 :Int32;
  beamRoundOutstanding @17 :Int32;
  beamFinished @18 :Bool;
  beamActive @19 :List(Int32);
  beamNew @20 :List(Int32);
  beamCompleted @21 :List(Int32);
  dvtsSubtrees @22 :List(Subtree);
  dvtsSubtreeOf @23 :List(SubtreeOf);
  dvtsFinished @24 :List(Int32);
  samplesPlanned @25 :Int32;      # best-of-N with early stopping
  settled @26 :Bool;
}
