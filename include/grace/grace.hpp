#pragma once
#include "grace/address.hpp"
#include "grace/error.hpp"
#include "grace/listener.hpp"
#include "grace/net.hpp"
#include "grace/readiness.hpp"
