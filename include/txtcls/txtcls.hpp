#pragma once
// txtcls: text classification models on a small tensor/autograd core. Umbrella header.
#include "txtcls/core/config.hpp"
#include "txtcls/core/error.hpp"
#include "txtcls/tensor.hpp"
#include "txtcls/ops/matmul.hpp"
#include "txtcls/ops/dropout.hpp"
#include "txtcls/ops/embedding.hpp"
#include "txtcls/ops/indexing.hpp"
#include "txtcls/ops/loss.hpp"
