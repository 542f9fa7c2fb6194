/* placeholder until the app worker lands */
int main(void) { return 0; }
