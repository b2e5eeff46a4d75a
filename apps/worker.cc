// canopy worker: serve expansions for a coordinator.
//
//   canopy worker --connect 10.0.0.1:7000 [--secret-file F] [--model M] [--kv-cache-mb 4096]
//
// The job secret comes from $CANOPY_JOB_SECRET or --secret-file (mode 0600), never from the
// command line. The worker keeps reconnecting for --reconnect-seconds when the coordinator
// is not up yet or goes away, so a restarted coordinator finds its workers again.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "apps/job_spec.h"
#include "apps/worker_main.h"
#include "common/logging.h"
#include "transport/auth.h"
#include "transport/host_port.h"
#include "worker/service/worker_service.h"

namespace canopy {

int ServeAsWorker(const WorkerSetupOptions& setup_options, const WorkerServiceOptions& service) {
  auto setup = WorkerSetup::Create(setup_options);
  if (!setup.ok()) {
    std::fprintf(stderr, "canopy worker: %s\n", setup.status().ToString().c_str());
    return 1;
  }
  LocalWorker worker((*setup)->engine(), (*setup)->provider());
  Capabilities caps = WorkerCapabilities(*(*setup)->engine(), (*setup)->model_name());
  Status s = RunWorkerService(&worker, caps, service);
  if (!s.ok()) {
    std::fprintf(stderr, "canopy worker: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

int WorkerMain(int argc, char** argv) {
  CLI::App app{"Serve expansions for a coordinator", "canopy worker"};
  std::string connect, connect_file, secret_file;
  WorkerSetupOptions so;
  WorkerServiceOptions service;
  auto* c1 = app.add_option("--connect", connect, "the coordinator's HOST:PORT");
  auto* c2 = app.add_option("--connect-file", connect_file,
                            "a file holding the coordinator's HOST:PORT (re-read before every attempt)");
  c1->excludes(c2);
  app.add_option("--secret-file", secret_file, "the job secret (else $CANOPY_JOB_SECRET)");
  AddWorkerOptions(app, &so);
  app.add_option("--name", service.name, "this worker's name in the coordinator's logs");
  app.add_option("--reconnect-seconds", service.reconnect_seconds,
                 "keep trying to reach the coordinator this long");
  app.add_option("--heartbeat-seconds", service.heartbeat_seconds);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (connect.empty() && connect_file.empty()) {
    std::fprintf(stderr, "canopy worker: --connect HOST:PORT or --connect-file FILE is needed\n");
    return 2;
  }
  if (!connect.empty()) {
    auto hp = ParseHostPort(connect, "--connect");
    if (!hp.ok()) {
      std::fprintf(stderr, "canopy worker: %s\n", hp.status().message().c_str());
      return 2;
    }
    service.host = hp->first;
    service.port = hp->second;
  }
  service.address_file = connect_file;
  auto secret = LoadJobSecret(secret_file);
  if (!secret.ok()) {
    std::fprintf(stderr, "canopy worker: the job secret: %s (set %s or pass --secret-file)\n",
                 secret.status().ToString().c_str(), kSecretEnvVar);
    return 2;
  }
  service.secret = *secret;
  return ServeAsWorker(so, service);
}

}  // namespace canopy
