/* placeholder until the model worker lands */
int main(void) { return 0; }
