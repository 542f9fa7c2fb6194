/* placeholder until the host lands */
#include <stdio.h>
int main(void) { puts("moonspace"); return 0; }
