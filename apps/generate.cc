namespace canopy {
int GenerateMain(int argc, char** argv) { return 1; }
}  // namespace canopy
