/* double buffers passed to a float function: with
   -Werror=incompatible-pointer-types this must not compile (the README says
   how to get this check; C11's rite_step picks the function by type). */
#include "lora_rite.h"

int main(void)
{
    double L[4], R[4], gL[4], gR[4];
    return (int)rite_step_f32((rite_layer *)0, L, R, gL, gR);
}
