#pragma once
// The tensor and autograd core: include this for Tensor<T>, views, creation and backward().
#include "txtcls/autograd/engine.hpp"
#include "txtcls/autograd/grad_mode.hpp"
#include "txtcls/tensor/creation.hpp"
#include "txtcls/tensor/print.hpp"
#include "txtcls/tensor/tensor_decl.hpp"
#include "txtcls/tensor/views.hpp"
#include "txtcls/ops/elementwise.hpp"
#include "txtcls/ops/reduce.hpp"
